"""Group commit: sends waiting at the same moment share one transaction.

The path of one `send` (server.dispatch.op_send → `submit`): the event waits in the queue;
`_commit` writes it to the store with the others of its batch, acknowledges each sender
(the reply carries the seq), hands the events to the publisher task for the other workers,
and delivers them to this worker's members (`server.fanout.Fanout.deliver`, which puts them
in each room's feed: `server.feed.RoomFeed`). The commit rate, not the message rate, bounds
the store; the publisher writes to the broker in commit order without holding the next
commit back for its round trip (events committed meanwhile go out together).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from rooms.errors import HearthError, Internal
from rooms.model import Event, NewEvent
from rooms.ports import TranscriptStore
from server.fanout import Fanout, Outgoing
from server.metrics import Metrics

log = logging.getLogger("hearth.commit")


class GroupCommitter:
    """Two tasks per worker, one committing and one publishing; `submit()` queues an event
    and returns its future."""

    def __init__(self, store: TranscriptStore, fanout: Fanout, *, max_batch: int, metrics: Metrics) -> None:
        self.store = store
        self.fanout = fanout
        self.metrics = metrics
        self.max_batch = max_batch
        self._queue: deque[tuple[NewEvent, asyncio.Future[Event]]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._outgoing: list[Outgoing] = []
        self._send = asyncio.Event()
        self._sent = asyncio.Event()
        self._sent.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.on_committed: Callable[[list[Event]], None] | None = None  # told after delivery (the safety watch)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="group commit"),
            asyncio.create_task(self._publish(), name="publish commits"),
        ]

    def submit(self, event: NewEvent) -> asyncio.Future[Event]:
        """Queue `event`; the future resolves once it is durable (or fails with a HearthError)."""
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._queue.append((event, future))
        self._idle.clear()
        self._wake.set()
        return future

    async def flush(self) -> None:
        """Return once everything submitted so far is committed (or failed) and published."""
        await self._idle.wait()
        await self._sent.wait()

    async def close(self) -> None:
        await self.flush()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
                await self._commit(batch)
            self._idle.set()

    async def _commit(self, batch: list[tuple[NewEvent, asyncio.Future[Event]]]) -> None:
        """Commit, acknowledge, hand the events to the publisher, then deliver them to this
        worker's members, in seq order. Never raises: a failure is told to each sender, so
        one bad batch cannot stop the committer."""
        self.metrics.batch.observe(len(batch))
        started = time.perf_counter()
        try:
            results: list[Event | HearthError] = await self.store.append([new for new, _ in batch])
        except HearthError as exc:
            results = [exc] * len(batch)
        except Exception:
            log.exception("commit of %d events failed", len(batch))
            results = [Internal("The message could not be saved.")] * len(batch)
        self.metrics.commit.observe(time.perf_counter() - started)
        self.metrics.messages_in.inc(sum(isinstance(r, Event) for r in results))
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Event):
                future.set_result(result)
            else:
                future.set_exception(result)
        committed = [result for result in results if isinstance(result, Event)]
        if not committed:
            return
        batches = self.fanout.batches(committed)
        outgoing = self.fanout.outgoing(batches)
        if outgoing:  # (nothing to publish with a broker inside this process)
            self._outgoing.extend(outgoing)
            self._sent.clear()
            self._send.set()
            # One turn of the loop: the publisher writes them to the broker before this
            # worker's members are written to, so the other workers start sooner.
            await asyncio.sleep(0)
        self.fanout.deliver(batches)
        if self.on_committed is not None:
            self.on_committed(committed)

    async def _publish(self) -> None:
        while True:
            await self._send.wait()
            self._send.clear()
            while self._outgoing:
                outgoing, self._outgoing = self._outgoing, []
                try:
                    await self.fanout.publish(outgoing)
                except Exception:  # durable already; other workers fill the gap from the store
                    log.exception("publish of %d events failed", len(outgoing))
            self._sent.set()
