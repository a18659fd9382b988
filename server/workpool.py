"""Work that must leave the event loop, on a few threads of its own, with a short queue.

Through `asyncio.to_thread` every job is taken however many come at once: a flood queues
unbounded work (and memory) on the loop's default executor, which database and Redis
reconnects share. Here at most `workers` jobs run and `queue` wait; one more is refused at
once with `rate_limited`, so a flood never builds a backlog that outlives it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from rooms.errors import RateLimited

T = TypeVar("T")


class WorkPool:
    """`run(work)` on the pool's threads, or RateLimited(`busy`) when it is full."""

    def __init__(self, name: str, *, workers: int, queue: int, busy: str) -> None:
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"hearth-{name}")
        self._capacity = workers + queue
        self._busy = busy
        self._jobs = 0  # submitted and not finished
        self._lock = threading.Lock()  # jobs finish on the pool's threads

    async def run(self, work: Callable[[], T]) -> T:
        with self._lock:
            if self._jobs >= self._capacity:
                raise RateLimited(self._busy, retry_after=1.0)
            self._jobs += 1
        future = self._threads.submit(work)
        future.add_done_callback(self._finished)
        return await asyncio.wrap_future(future)

    def _finished(self, future: Future[Any]) -> None:
        with self._lock:
            self._jobs -= 1

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
