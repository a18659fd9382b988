"""What a client received, in arrival order, and the ways a test waits on it: take the next
frame of a kind, look at all that came so far, wait until one has come, or make sure none
comes for a while. Knows nothing of sockets: `Client` puts frames in and closes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.deadlines import described

Frame = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """Frames of kind `ev`, in `room`, for which `where` holds; any of them left out: all."""

    ev: str | None = None
    room: str | None = None
    where: Callable[[Frame], bool] | None = None

    def __call__(self, frame: Frame) -> bool:
        return (
            (self.ev is None or frame.get("ev") == self.ev)
            and (self.room is None or frame.get("room") == self.room)
            and (self.where is None or self.where(frame))
        )

    def __str__(self) -> str:
        what = f"{self.ev!r} event" if self.ev else "frame"
        if self.room:
            what += f" in {self.room}"
        if self.where:
            what += f" where {described(self.where)}"
        return what


class Inbox:
    """Frames in arrival order. `take` hands them out one by one; the others only look."""

    def __init__(self) -> None:
        self._frames: list[Frame] = []
        self._taken = 0  # `take` has handed out (or skipped) the frames before this index
        self._arrived = asyncio.Event()  # set, and replaced, at each arrival and at the close
        self._closed: str | None = None  # why nothing more will come, once that is so

    def put(self, frame: Frame) -> None:
        self._frames.append(frame)
        self._wake()

    def close(self, why: str) -> None:
        """Nothing more will come: waits for a frame fail at once rather than at their deadline."""
        self._closed = why
        self._wake()

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = asyncio.Event()

    def seen(self, kind: Kind) -> list[Frame]:
        """Every frame of `kind` so far, taken or not."""
        return [frame for frame in self._frames if kind(frame)]

    async def take(self, kind: Kind, *, within: float) -> Frame:
        """The next frame of `kind` not yet taken, skipping (and taking) those before it."""

        def next_one() -> Frame | None:
            for i in range(self._taken, len(self._frames)):
                if kind(self._frames[i]):
                    self._taken = i + 1
                    return self._frames[i]
            self._taken = len(self._frames)  # none matches: all are skipped, so each is looked at once
            return None

        return await self._wait(next_one, kind, within)

    async def until(self, kind: Kind, *, within: float) -> Frame:
        """The first frame of `kind`, once one has come (perhaps already); takes nothing."""

        looked = 0  # each frame is looked at once

        def first() -> Frame | None:
            nonlocal looked
            for frame in self._frames[looked:]:
                if kind(frame):
                    return frame
            looked = len(self._frames)
            return None

        return await self._wait(first, kind, within)

    async def none(self, kind: Kind, *, within: float) -> None:
        """Fail at once if a frame of `kind` is waiting, not yet taken, or comes within
        `within` seconds; return after them, or at the close (nothing more can come)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        looked = self._taken  # each frame is looked at once
        while True:
            arrived = self._arrived
            came = [frame for frame in self._frames[looked:] if kind(frame)]
            assert not came, f"a {kind} came within {within:.1f} s: {came[0]}"
            looked = len(self._frames)
            if self._closed is not None or loop.time() >= deadline:
                return
            try:
                async with asyncio.timeout_at(deadline):
                    await arrived.wait()
            except TimeoutError:
                pass  # look once more: a frame that came at the deadline counts

    async def _wait(self, find: Callable[[], Frame | None], kind: Kind, within: float) -> Frame:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            arrived = self._arrived
            if (found := find()) is not None:
                return found
            if self._closed is not None:
                raise AssertionError(f"{self._closed} without a {kind}; last came: {self._frames[-3:]}")
            try:
                async with asyncio.timeout_at(deadline):
                    await arrived.wait()
            except TimeoutError:
                raise AssertionError(f"no {kind} within {within:.1f} s; last came: {self._frames[-3:]}") from None
