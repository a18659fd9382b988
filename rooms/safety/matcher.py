"""The default detector: a compiled phrase file matched against a message's words."""

from __future__ import annotations

from bisect import bisect_left

from rooms.safety import Hit
from rooms.safety.phrasebook import PhraseBook, Rule, anchors_of


class _Index:
    """Which rules a message's words can match: those whose anchors it holds."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.exact, self.stems = anchors_of(rules)
        self.stem_lengths = sorted({len(s) for s in self.stems})
        # The first three letters of every stem: most words start otherwise, and are done
        # with after one look-up. (Stems shorter than three letters are always tried.)
        self.heads = frozenset(s[:3] for s in self.stems if len(s) >= 3)
        self.short = [s for s in self.stems if len(s) < 3]

    def candidates(self, words: list[str]) -> list[int]:
        exact, stems, lengths, heads = self.exact, self.stems, self.stem_lengths, self.heads
        found: set[int] = set()
        for word in set(words):
            hit = exact.get(word)
            if hit is not None:
                found.update(hit)
            if word[:3] in heads:
                for n in lengths:
                    if n > len(word):
                        break
                    hit = stems.get(word[:n])
                    if hit is not None:
                        found.update(hit)
            for stem in self.short:
                if word.startswith(stem):
                    found.update(stems[stem])
        return sorted(found)


class _Spans:
    """Stretches of a text, merged, asked whether they overlap another (in log time: a long
    message may hold thousands)."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        for start, end in sorted(spans):
            if self.ends and start <= self.ends[-1]:
                self.ends[-1] = max(self.ends[-1], end)
            else:
                self.starts.append(start)
                self.ends.append(end)

    def overlaps(self, start: int, end: int) -> bool:
        i = bisect_left(self.starts, end) - 1  # the last stretch that starts before `end`
        return i >= 0 and self.ends[i] > start


class PhraseDetector:
    """A `Detector` over a `PhraseBook`: the first phrase pattern, in order of precedence,
    that matches somewhere no idiom covers."""

    def __init__(self, book: PhraseBook) -> None:
        self.book = book
        self._rules = _Index(book.rules)
        self._idioms = _Index(book.idioms)
        self._hits = {(rule.category, rule.id): Hit(rule.category, rule.id) for rule in book.rules if rule.category}

    def scan(self, text: str) -> Hit | None:
        words = self.book.normaliser.words(text)
        candidates = self._rules.candidates(words)
        if not candidates:
            return None
        line = " " + " ".join(words) + " "
        covered: _Spans | None = None
        for i in candidates:
            rule = self._rules.rules[i]
            for match in rule.regex.finditer(line):
                if covered is None:
                    covered = self._covered(words, line)
                if not covered.overlaps(*match.span()):
                    assert rule.category is not None
                    return self._hits[(rule.category, rule.id)]
        return None

    def _covered(self, words: list[str], line: str) -> _Spans:
        """Where idioms match: a phrase matched inside one of them does not count."""
        spans: list[tuple[int, int]] = []
        for i in self._idioms.candidates(words):
            spans.extend(m.span() for m in self._idioms.rules[i].regex.finditer(line))
        return _Spans(spans)
