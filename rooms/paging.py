"""How much one reply may carry: the newest events that fit in a budget of bytes.

A join that resumes from `since` and a page of `history` return events newest-last; a
client that gets fewer than it asked for pages back from the first one it got (the
protocol's `recovered: false`, and `history` with `before`). So a reply over its budget
keeps the newest events, and the hole is always at the old end, where paging fills it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def newest_within(items: Sequence[T], budget: int, size: Callable[[T], int]) -> list[T]:
    """The newest of `items` (oldest first) whose sizes add up to at most `budget`, oldest
    first; always the newest one, whatever its size, so a page is never empty by size alone."""
    kept: list[T] = []
    used = 0
    for item in reversed(items):
        used += size(item)
        if kept and used > budget:
            break
        kept.append(item)
    kept.reverse()
    return kept
