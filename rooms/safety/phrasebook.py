"""A phrase file, read and compiled: the rules a `PhraseDetector` matches.

A phrase file (TOML; `docs/safety.md` has the whole format) holds named word lists,
phrases (an id, a category, patterns, examples), idioms (patterns that must not alert, with
examples) and the words that may be misspelt. A pattern is words separated by spaces,
matched against a message's normalised words (`rooms.safety.normalise`):

    word        that word                     word*      any word that starts so
    a|b*|c      any of these                  @name      any entry of the list `name`
    (a b|c d*)  any of these word sequences (each may use words, stems, lists and ?)
    x?          x or nothing (any of the above)
    ~N          up to N words of anything (1 to 6)
    !x          the next words are not x (x any of the above; consumes nothing)
    #N+         a number N or more, in digits

Each pattern becomes one regular expression over the text `" w1 w2 … wn "`; each piece
matches whole words with the space after them. Each pattern has anchors: words one of which
any match contains, so a message is only tried against the patterns whose anchors it holds.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from rooms.safety import Category, PhraseError
from rooms.safety.normalise import Normaliser, fold_words, squeeze

MAX_GAP = 6
# A pattern's pieces: a parenthesised group (with its ! or ?), or a run of anything else.
_TOKEN = re.compile(r"!?\([^()]*\)\??|[^\s()]+")
# Suffixes a stem is read with when spelt-out letters or a hashtag are split into words.
_STEM_ENDINGS = ("", "e", "s", "es", "ed", "d", "ing", "al", "er")
_WEAK = frozenset(
    squeeze(w)
    for w in (
        "i im ive id me my to a an the it its is he she hes shes and of in on be you we they her him his was for "
        "so at not dont just with that this all have been will would can could do did get got up out no"
    ).split()
)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A word any match contains: exactly `text`, or (stem) any word starting with it."""

    text: str
    stem: bool = False


@dataclass(slots=True)
class _Piece:
    regex: str
    anchors: frozenset[Anchor] | None  # None: the piece needs no particular word
    optional: bool = False
    width: bool = True  # False for a look-ahead
    gap: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """One pattern of a phrase (with its category) or of an idiom (category None)."""

    id: str
    category: Category | None
    pattern: str
    regex: re.Pattern[str]
    anchors: frozenset[Anchor]


@dataclass(frozen=True, slots=True)
class Entry:
    """A phrase or an idiom as the file wrote it, for tests and tools."""

    id: str
    category: Category | None
    patterns: tuple[str, ...]
    examples: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PhraseBook:
    locale: str
    categories: tuple[Category, ...]  # in order of precedence
    rules: tuple[Rule, ...]  # phrase patterns, in order of precedence
    idioms: tuple[Rule, ...]
    entries: tuple[Entry, ...]
    normaliser: Normaliser = field(repr=False)


def _number_at_least(n: int) -> str:
    """A regular expression for the whole numbers >= n written in digits."""
    digits = str(n)
    if n == 0:
        return "[0-9]+"
    options = [f"[1-9][0-9]{{{len(digits)},}}"]  # more digits than n
    for i, d in enumerate(digits):  # as many digits: the same up to i, then larger at i
        low = int(d) + (1 if i < len(digits) - 1 else 0)
        if low <= 9:
            rest = len(digits) - i - 1
            options.append(digits[:i] + f"[{low}-9]" + ("[0-9]" * rest))
    return "(?:" + "|".join(options) + ")"


class _Compiler:
    def __init__(self, lists: Mapping[str, list[str]], where: str) -> None:
        self.lists = lists
        self.where = where
        self.words: set[str] = set()
        self.stems: set[str] = set()
        self._compiled: dict[str, _Piece] = {}
        self._busy: set[str] = set()

    def fail(self, message: str) -> PhraseError:
        return PhraseError(f"{self.where}: {message}")

    def pattern(self, source: str, *, lists_only: bool = False) -> _Piece:
        """A pattern (or a list entry: no gaps, look-aheads or numbers) as one piece."""
        tokens = _TOKEN.findall(source)
        if not tokens or "".join("".join(tokens).split()) != "".join(source.split()):
            raise self.fail(f"empty pattern, or unbalanced parentheses, in {source!r}")
        pieces = [self._token(t, source, lists_only) for t in tokens]
        if pieces[0].gap:
            raise self.fail(f"pattern {source!r} starts with a gap")
        if pieces[-1].gap:
            raise self.fail(f"pattern {source!r} ends with a gap")
        required = [p.anchors for p in pieces if p.width and not p.optional and p.anchors]
        if not required:
            raise self.fail(f"pattern {source!r} has no word it always needs")
        anchors = min(required, key=_weakness)
        return _Piece("".join(p.regex for p in pieces), anchors)

    def _token(self, token: str, source: str, lists_only: bool) -> _Piece:
        if token.startswith("~"):
            if lists_only or not token[1:].isdigit() or not 1 <= int(token[1:]) <= MAX_GAP:
                raise self.fail(f"bad gap {token!r} in {source!r} (use ~1 to ~{MAX_GAP}, not in lists)")
            return _Piece(f"(?:[^ ]+ ){{0,{token[1:]}}}", None, gap=True)
        if token.startswith("#"):
            match = re.fullmatch(r"#([0-9]+)\+", token)
            if lists_only or not match:
                raise self.fail(f"bad number {token!r} in {source!r} (use #N+, not in lists)")
            return _Piece(_number_at_least(int(match.group(1))) + " ", None)
        if token.startswith("!"):
            if lists_only or len(token) == 1:
                raise self.fail(f"bad look-ahead {token!r} in {source!r} (not in lists)")
            inner = self._choice(token[1:], source)
            return _Piece(f"(?!{inner.regex})", None, width=False)
        optional = token.endswith("?")
        piece = self._choice(token.removesuffix("?"), source)
        if optional:
            piece = _Piece(f"(?:{piece.regex})?", piece.anchors, optional=True)
        return piece

    def _choice(self, spec: str, source: str) -> _Piece:
        if spec.startswith("(") and spec.endswith(")"):
            pieces = [self.pattern(alternative, lists_only=True) for alternative in spec[1:-1].split("|")]
        else:
            pieces = [self._alternative(alternative, source) for alternative in spec.split("|")]
        regex = pieces[0].regex if len(pieces) == 1 else "(?:" + "|".join(p.regex for p in pieces) + ")"
        if all(p.anchors for p in pieces):
            return _Piece(regex, frozenset().union(*(p.anchors or () for p in pieces)))
        return _Piece(regex, None)

    def _alternative(self, alternative: str, source: str) -> _Piece:
        if not alternative:
            raise self.fail(f"empty alternative in {source!r}")
        if alternative.startswith("@"):
            return self._list(alternative[1:], source)
        stem = alternative.endswith("*")
        text = alternative.removesuffix("*")
        if not re.fullmatch(r"[a-z0-9'\-]+", text):
            raise self.fail(f"bad word {alternative!r} in {source!r} (lower case letters, digits, ' and -)")
        words = fold_words(text)
        if not words:
            raise self.fail(f"bad word {alternative!r} in {source!r}")
        if stem:
            self.stems.add(words[-1])
        for w in words[: -1 if stem else None]:
            self.words.add(w)
        regex = " ".join(re.escape(w) for w in words) + ("[^ ]* " if stem else " ")
        best = max(words[: -1 if stem else None] or [""], key=len)
        if stem and len(words[-1]) >= len(best):
            return _Piece(regex, frozenset({Anchor(words[-1], stem=True)}))
        return _Piece(regex, frozenset({Anchor(best)}))

    def _list(self, name: str, source: str) -> _Piece:
        if name not in self.lists:
            raise self.fail(f"unknown list @{name} in {source!r}")
        if name in self._compiled:
            return self._compiled[name]
        if name in self._busy:
            raise self.fail(f"list @{name} contains itself")
        self._busy.add(name)
        entries = [self.pattern(entry, lists_only=True) for entry in self.lists[name]]
        self._busy.discard(name)
        anchors = frozenset().union(*(e.anchors or () for e in entries))
        piece = _Piece("(?:" + "|".join(e.regex for e in entries) + ")", anchors)
        self._compiled[name] = piece
        return piece


def _weakness(anchors: frozenset[Anchor]) -> tuple[int, int, int]:
    """How poor a set of anchors is as a filter: common or short words first."""
    weak = sum(1 for a in anchors if a.text in _WEAK or len(a.text) <= 2)
    return (weak, -min(len(a.text) for a in anchors), len(anchors))


def _strings(value: Any, what: str, where: str, *, empty: bool = False) -> list[str]:
    if not isinstance(value, list) or not (value or empty) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PhraseError(f"{where}: {what} must be a list of non-empty strings")
    return value


def _table(data: Any, where: str, keys: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise PhraseError(f"{where}: expected a table")
    unknown, missing = set(data) - keys, required - set(data)
    if unknown:
        raise PhraseError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    if missing:
        raise PhraseError(f"{where}: missing key(s) {', '.join(sorted(missing))}")
    return data


def compile_phrasebook(source: str, *, name: str = "phrases") -> PhraseBook:
    """Read and check a phrase file; raises `PhraseError` saying where it is wrong."""
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise PhraseError(f"{name}: {exc}") from None
    top = _table(data, name, {"locale", "categories", "lists", "fuzzy", "phrase", "idiom"}, {"locale", "categories"})
    if not isinstance(top["locale"], str):
        raise PhraseError(f"{name}: locale must be a string")
    known = {c.value for c in Category}
    order = _strings(top["categories"], "categories", name)
    if len(set(order)) != len(order) or not set(order) <= known:
        raise PhraseError(f"{name}: categories must be distinct, among {', '.join(sorted(known))}")
    categories = tuple(Category(c) for c in order)
    lists = top.get("lists", {})
    if not isinstance(lists, dict):
        raise PhraseError(f"{name}: [lists] must be a table")
    for list_name, list_entries in lists.items():
        _strings(list_entries, f"list {list_name}", name)

    seen: set[str] = set()
    entries: list[Entry] = []
    rules: list[tuple[int, int, Rule]] = []
    idioms: list[Rule] = []
    compiler = _Compiler(lists, name)
    for kind in ("phrase", "idiom"):
        items = top.get(kind, [])
        if not isinstance(items, list):
            raise PhraseError(f"{name}: [[{kind}]] must be an array of tables")
        for n, item in enumerate(items):
            where = f"{name}: {kind} #{n + 1}"
            keys = {"id", "match", "examples"} | ({"category"} if kind == "phrase" else set())
            item = _table(item, where, keys, keys - {"examples"})
            entry_id = item["id"]
            if not isinstance(entry_id, str) or not re.fullmatch(r"[a-z0-9_.\-]+", entry_id):
                raise PhraseError(f"{where}: id must be lower case letters, digits, _ . or -")
            if entry_id in seen:
                raise PhraseError(f"{where}: id {entry_id!r} is used twice")
            seen.add(entry_id)
            category: Category | None = None
            if kind == "phrase":
                if item["category"] not in order:
                    raise PhraseError(f"{where} ({entry_id}): category must be one of {', '.join(order)}")
                category = Category(item["category"])
            patterns = _strings(item["match"], f"{entry_id}: match", where)
            examples = _strings(item["examples"], f"{entry_id}: examples", where) if "examples" in item else []
            entries.append(Entry(entry_id, category, tuple(patterns), tuple(examples)))
            compiler.where = f"{name}: {entry_id}"
            for pattern in patterns:
                piece = compiler.pattern(pattern)
                assert piece.anchors is not None  # pattern() refuses a pattern without one
                rule = Rule(entry_id, category, pattern, re.compile("(?<= )" + piece.regex), piece.anchors)
                if category is None:
                    idioms.append(rule)
                else:
                    rules.append((order.index(category), len(rules), rule))

    fuzzy = _table(top.get("fuzzy", {"words": []}), f"{name}: [fuzzy]", {"words", "except"}, {"words"})
    fuzzy_words = [w for v in _strings(fuzzy["words"], "fuzzy words", name, empty=True) for w in fold_words(v)]
    exact = [w for v in _strings(fuzzy.get("except", []), "fuzzy except", name, empty=True) for w in fold_words(v)]
    vocabulary = set(compiler.words) | {squeeze(s + e) for s in compiler.stems for e in _STEM_ENDINGS}
    normaliser = Normaliser(vocabulary | set(fuzzy_words), fuzzy_words, [*exact, *compiler.words])
    return PhraseBook(
        locale=top["locale"],
        categories=categories,
        rules=tuple(rule for _, _, rule in sorted(rules, key=lambda r: (r[0], r[1]))),
        idioms=tuple(idioms),
        entries=tuple(entries),
        normaliser=normaliser,
    )


def locales() -> list[str]:
    """The locales that have a phrase file (`rooms/safety/phrases/<locale>.toml`)."""
    folder = resources.files("rooms.safety").joinpath("phrases")
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_phrasebook(locale: str) -> PhraseBook:
    """The phrase file of `locale`, read and compiled. Raises `PhraseError`."""
    if locale not in locales():
        raise PhraseError(f"no phrase file for locale {locale!r} (have: {', '.join(locales())})")
    source = resources.files("rooms.safety").joinpath("phrases", f"{locale}.toml").read_text(encoding="utf-8")
    return compile_phrasebook(source, name=f"{locale}.toml")


def anchors_of(rules: Iterable[Rule]) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Index rules by anchor: (exact word -> rule indexes, stem -> rule indexes)."""
    exact: dict[str, list[int]] = {}
    stems: dict[str, list[int]] = {}
    for i, rule in enumerate(rules):
        for anchor in rule.anchors:
            (stems if anchor.stem else exact).setdefault(anchor.text, []).append(i)
    return exact, stems
