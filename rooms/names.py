"""Display names: what a member may be called in a community, and when two names are one.

A display name is shown inline, next to other people's words, by people who may be tired,
on a small screen, at night. So beyond the rules of every name (`rooms.service.clean_name`:
one line, no control or bidi or formatting characters), a display name must be seen to be
what it is:

- something to read: at least one letter or digit; no character that shows as nothing
  (default-ignorable code points such as the combining grapheme joiner, Hangul fillers, the
  braille blank, a variation selector that follows no symbol), no more than a few combining
  marks on one letter;
- its own: two names that read the same are the same name (`name_key`: case, compatibility
  forms, joiners, spacing, and letters of other scripts that look like Latin ones);
- not staff, unless it is: words that say someone speaks for the group ("facilitator",
  "mods", "Admin1", "Dr") are refused to anyone whose role is not staff, however they are
  spelt (`_as_read`); the card's `role` says who is staff.

What this cannot catch: a name that is merely similar ("Sam" and "Sam."), look-alikes beyond
the common Cyrillic and Greek ones, and words of staff in other languages.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from rooms.errors import BadRequest
from rooms.model import Role
from rooms.service import clean_name

MAX_DISPLAY_NAME = 40
MAX_NAME_KEY = 200  # the store's column for `name_key`
MAX_MARKS = 3  # combining marks on one letter: enough for Vietnamese, not for a tower of them
_JOINERS = "\u200c\u200d"  # allowed in names (rooms.service.clean_name), invisible in them
_NO_JOINERS = str.maketrans("", "", _JOINERS)

# Code points that show as nothing (or as blank) yet are not format characters, so
# `clean_name` lets them through: the combining grapheme joiner, Hangul fillers, Khmer
# inherent vowels, Mongolian and other variation selectors, the braille blank.
_INVISIBLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\uffa0\U000e0100-\U000e01ef]")
# A variation selector chooses how a symbol is drawn ("❤️" is U+2764 U+FE0F): after a
# symbol it is part of it; after anything else it is an invisible mark.
_STRAY_SELECTOR = re.compile("(?:^|(?<=[^\u2000-\u2bff\U0001f000-\U0001faff\u00a9\u00ae\u3030\u303d]))[\ufe00-\ufe0f]")

# Letters of Cyrillic and Greek that are drawn as Latin ones: "Ѕаm" and "Sam" are one name.
_LOOK_ALIKES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
        "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d",
        "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ı": "i",
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o",
        "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j",
    }
)  # fmt: skip

# Words that say someone speaks for the group, and their plurals; digits, `_` and
# punctuation end a word as spaces do ("Admin1", "ADMIN_jo", "Sam(mod)").
_STAFF_WORDS = re.compile(
    r"(?<![a-z])(facilitator|moderator|mod|admin|administrator|sysadmin|clinician|staff|nurse|doctor|dr"
    r"|therapist|counsellor|counselor|psychologist|psychiatrist|official|support team|hearth|hearthbot"
    r"|team hearth)s?(?![a-z])"
)


def name_key(name: str) -> str:
    """What two names are compared by, so that a name that reads the same as another is
    taken: compatibility forms folded (NFKC: "Ｓａｍ" is "Sam", a precomposed é the decomposed
    one), the invisible joiners taken out ("Sa\u200dm" is "Sam"), runs of spaces made one and
    the ends trimmed, case-folded ("SAM" is "Sam"), and Cyrillic and Greek look-alikes read
    as the Latin letters they look like ("Ѕаm" is "Sam"). A key longer than the column holds
    (a name of characters that NFKC spells out at length) is kept as its SHA-256."""
    folded = unicodedata.normalize("NFKC", name).translate(_NO_JOINERS)
    key = unicodedata.normalize("NFKC", " ".join(folded.split()).casefold()).translate(_LOOK_ALIKES)
    if len(key) > MAX_NAME_KEY:
        key = "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key


def _as_read(name: str) -> str:
    """A name as the eye reads it, for the staff-word check: compatibility forms folded
    ("Ｍｏｄ" is "Mod"), accents and the invisible joiners taken out ("facili\u200dtator" and
    "Ádmin" read as the words they hide), look-alikes read as Latin ("Аdmin"), case-folded."""
    decomposed = unicodedata.normalize("NFKD", name)
    kept = "".join(c for c in decomposed if unicodedata.category(c) != "Mn" and c not in _JOINERS)
    return unicodedata.normalize("NFKC", kept).casefold().translate(_LOOK_ALIKES)


def clean_display_name(name: str, role: Role) -> str:
    """A display name as stored, or BadRequest / TooLarge."""
    name = clean_name(name, what="Display name", max_chars=MAX_DISPLAY_NAME)
    if _INVISIBLE.search(name) or _STRAY_SELECTOR.search(name):
        raise BadRequest("A display name cannot hold characters that show as nothing.")
    if not any(unicodedata.category(c)[0] in "LN" for c in name):
        raise BadRequest("A display name needs at least one letter or digit.")
    marks = 0
    for char in name:
        marks = marks + 1 if unicodedata.category(char) in ("Mn", "Me") else 0
        if marks > MAX_MARKS:
            raise BadRequest("A display name cannot stack that many marks on one letter.")
    if not role.is_staff and _STAFF_WORDS.search(_as_read(name)):
        raise BadRequest("A display name cannot say that you are staff; staff are shown by their role.")
    return name
