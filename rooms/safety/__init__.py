"""The crisis detector: does a message say that someone may be in danger?

It supports the people who run a group, never replaces them: a hit opens a case for a
facilitator to read, and nothing the detector says delays or hides a message. `Detector` is
the interface; `load_detector(locale)` gives the default one, a curated phrase set per
locale kept as data (`rooms/safety/phrases/<locale>.toml`, described in `docs/safety.md`)
and compiled once. A `Hit` names a category and the phrase that matched, never the text.

Pure domain: no I/O but reading the phrase files when a detector is first loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Protocol


class PhraseError(ValueError):
    """A phrase file that cannot be used: missing, malformed, or a pattern that cannot match."""


class Category(StrEnum):
    """What a hit is about. Their order in a phrase file is their precedence."""

    SUICIDE = "suicide"
    SELF_HARM = "self_harm"
    OVERDOSE = "overdose"
    ABUSE = "abuse"


@dataclass(frozen=True, slots=True)
class Hit:
    """A message matched `phrase` (a phrase id of the phrase file) in `category`."""

    category: Category
    phrase: str


class Detector(Protocol):
    """Reads a message's text; says whether it suggests a crisis, and of which kind.

    `scan` is pure and fast (it runs on every message): the same text always gives the same
    answer, and it never raises on any text, however long or strange."""

    def scan(self, text: str) -> Hit | None: ...


def locales() -> list[str]:
    """The locales that have a phrase file."""
    from rooms.safety.phrasebook import locales

    return locales()


@cache
def load_detector(locale: str = "en") -> Detector:
    """The default detector for `locale`, compiled once per process from its phrase file.
    Raises `PhraseError` when there is no such file or it is wrong."""
    from rooms.safety.matcher import PhraseDetector
    from rooms.safety.phrasebook import load_phrasebook

    return PhraseDetector(load_phrasebook(locale))


__all__ = ["Category", "Detector", "Hit", "PhraseError", "load_detector", "locales"]
