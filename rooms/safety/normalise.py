"""From a message to the words the phrases are matched against.

`fold` undoes what changes how a word looks but not what it says: case, accents and
look-alike letters, apostrophes, leetspeak inside words ("k1ll", "su1c1de", "$elf h@rm")
and punctuation or spacing between words. `squeeze` writes every run of a repeated letter
once ("killlll" and "kill" both become "kil"): phrases are squeezed the same way, so a
doubled letter, added or dropped, never matters. `Normaliser.words` does both, then joins
words spelt out letter by letter ("k i l l", "s.u.i.c.i.d.e") or run together in a hashtag
when they spell words the phrase file knows, and mends words the file lists as fuzzy when
they are misspelt by a letter ("sucidal", "suicidial", "ovedose").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

# Letters of other scripts that look like Latin ones, as they are used to slip past filters.
_LOOKALIKES = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "ё": "e", "і": "i", "ї": "i", "ј": "j", "к": "k", "м": "m",
        "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s",
        "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
        "υ": "u", "χ": "x",
        "’": "'", "‘": "'", "ʼ": "'", "′": "'", "`": "'", "´": "'",
    }
)  # fmt: skip
_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")

# Leetspeak: a digit or symbol standing for a letter inside a word.
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})
# (Tried from the start of a word only: from inside one, a long word would cost its length squared.)
_LEET_WORD = re.compile(r"(?<![a-z0-9@$!])[a-z0-9@$!]*[0-9@$!][a-z0-9@$!]*")
_LETTER = re.compile(r"[a-z]")
# A number with a unit or ending ("50mg", "2nd", "3am", "24hrs", "0d") is left as it is.
_QUANTITY = re.compile(r"[0-9]+[a-z]{0,3}")
_HASHTAG = re.compile(r"#([a-z]{4,40})")
_NOT_WORD = re.compile(r"[^a-z0-9]+")
# Three to forty single letters in a row: a word or two spelt out.
_SPELT_OUT = re.compile(r"(?<![a-z0-9])[a-z](?: [a-z]){2,39}(?![a-z0-9])")
_REPEATS = re.compile(r"([a-z])\1+")


def _unleet(match: re.Match[str]) -> str:
    word = match.group().strip("!")  # an exclamation mark around a word is punctuation
    if not _LETTER.search(word) or _QUANTITY.fullmatch(word):
        return match.group()  # a number, or a quantity
    return word.translate(_LEET)


def fold(text: str) -> str:
    """Lower case ASCII words and digits separated by single spaces (no squeezing)."""
    if not text.isascii():
        text = unicodedata.normalize("NFKD", text)
        text = _COMBINING.sub("", text).translate(_LOOKALIKES)
    text = text.lower().replace("'", "")
    text = _LEET_WORD.sub(_unleet, text)
    return text


def squeeze(text: str) -> str:
    """Every run of one repeated letter written once."""
    return _REPEATS.sub(r"\1", text)


def fold_words(text: str) -> list[str]:
    """`fold` and `squeeze`, as a list of words: how a phrase file's literal words are read."""
    return squeeze(_NOT_WORD.sub(" ", fold(text))).split()


def deletions(word: str) -> Iterable[str]:
    return (word[:i] + word[i + 1 :] for i in range(len(word)))


class Normaliser:
    """Turns a message into the words phrases are matched against.

    `vocabulary`: the words phrases are made of (squeezed), for joining spelt-out words and
    splitting hashtags; `fuzzy`: squeezed words that may be misspelt by one letter, each
    mapped to itself; `exact`: words never mended (real words one letter away, and every
    word of the vocabulary)."""

    def __init__(self, vocabulary: Iterable[str], fuzzy: Iterable[str], exact: Iterable[str]) -> None:
        self.vocabulary = frozenset(vocabulary)
        self._longest = max((len(w) for w in self.vocabulary), default=1)
        mend: dict[str, str] = {}
        words = sorted(set(fuzzy))
        for word in words:
            for shorter in deletions(word):
                mend.setdefault(shorter, word)
        for word in words:
            mend[word] = word
        self._mend: Mapping[str, str] = mend
        self._exact = frozenset(exact) | self.vocabulary
        self._shortest_fuzzy = min((len(w) for w in words), default=0) - 1
        self._longest_fuzzy = max((len(w) for w in words), default=0) + 1

    def words(self, text: str) -> list[str]:
        text = fold(text)
        if "#" in text:
            text = _HASHTAG.sub(self._hashtag, text)
        text = _NOT_WORD.sub(" ", text)
        text = _SPELT_OUT.sub(self._spelt_out, text)
        words = squeeze(text).split()
        if self._mend:
            self._mend_words(words)
        return words

    def _mend_words(self, words: list[str]) -> None:
        low, high, exact, mend = self._shortest_fuzzy, self._longest_fuzzy, self._exact, self._mend
        for i, word in enumerate(words):
            if low <= len(word) <= high and word not in exact:
                found = mend.get(word)
                if found is None:
                    for shorter in deletions(word):
                        found = mend.get(shorter)
                        if found is not None:
                            break
                if found is not None:
                    words[i] = found

    def _hashtag(self, match: re.Match[str]) -> str:
        parts = self.segment(squeeze(match.group(1)))
        return " ".join(parts) if parts else match.group(1)

    def _spelt_out(self, match: re.Match[str]) -> str:
        parts = self.segment(squeeze(match.group().replace(" ", "")))
        return " ".join(parts) if parts else match.group()

    def segment(self, run: str) -> list[str] | None:
        """`run` as the fewest words of the vocabulary, or None when it is not made of them."""
        vocabulary, longest = self.vocabulary, self._longest
        best: list[list[str] | None] = [[]] + [None] * len(run)
        for end in range(1, len(run) + 1):
            for start in range(max(0, end - longest), end):
                before = best[start]
                if before is not None and run[start:end] in vocabulary:
                    if best[end] is None or len(before) + 1 < len(best[end] or ()):
                        best[end] = [*before, run[start:end]]
        return best[len(run)]
