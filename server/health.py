"""Health: whether this worker's backends answer, and carrying on without shared state.

Presence, connection counts and rate buckets live in shared state (Redis with several
workers). While it does not answer, a worker serves on: a call on it gives None, and the
caller does without (its own count, its own bucket). The log says so once, with the
cause, until the heartbeat finds shared state back.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable
from typing import TypeVar

from rooms.errors import HearthError, Unavailable
from server.broker import Backend, Saturated

log = logging.getLogger("hearth.hub")

T = TypeVar("T")


class Health:
    def __init__(self, broker: Backend) -> None:
        self.broker = broker
        self._down: set[str] = set()  # what was said to be down (or busy) and is not known back

    @property
    def degraded(self) -> bool:
        """The broker is away: sends still commit; other workers get them once it is back."""
        return not self.broker.healthy

    async def shared(self, call: Awaitable[T]) -> T | None:
        """Await a call on shared state; while it is down, None (and the caller does without)."""
        try:
            return await call
        except Unavailable as exc:
            self.note("shared state", exc)
            return None

    def note(self, part: str, exc: BaseException | None = None) -> None:
        """Say once, until it is back, that `part` failed and why: the exception's type and
        what it means (never its text, which may carry arguments). Called in an `except`
        block, `exc` defaults to the exception being handled. A call that waited its whole
        bound for a connection (`Saturated`) is this worker's load, not an outage, and is
        logged as such."""
        exc = exc if exc is not None else sys.exception()
        cause = exc.__cause__ if exc is not None and exc.__cause__ is not None else exc
        why = type(cause).__name__ if cause is not None else "unknown"
        if isinstance(exc, HearthError):
            why += f": {exc.message}"
        busy = isinstance(exc, Saturated)
        key = f"{part} busy" if busy else part
        if key not in self._down:
            self._down.add(key)
            if busy:
                log.warning("%s busy, not down (%s)", part, why)
            else:
                log.warning("%s unavailable (%s): running degraded until it is back", part, why)

    def back(self) -> None:
        """Shared state answered the heartbeat: say so once, if it was said to be down."""
        if self._down:
            log.info("shared state is back")
            self._down.clear()
