"""RedisCommands: every command a worker sends Redis outside pub/sub, queued and pipelined.

The calls come in bursts: 2,000 sockets closing at once release 2,000 presence leases (a
script each), 2,000 connection counts (ZREM) and announce who left (PUBLISH); a reconnect
storm does the same on the way in. One pooled connection per call would need thousands of
connections, and redis-py's default pool raises MaxConnectionsError from the 101st on.
Instead calls queue, and leave together: at most `lanes` pipelines in flight, each carrying
up to `batch` commands that queued meanwhile (the transcript's group commit, on Redis).
A worker needs `lanes` connections whatever the burst, and a burst costs a few round trips.
Measured on one machine, 2,000 presence releases at once: on redis-py's default pool 1,900
failed with MaxConnectionsError; one call each on a blocking pool of 2 to 128 connections,
240–380 ms of worker CPU (310–600 ms of wall time), whatever its size; through this queue,
4 pipelines, 70–120 ms of CPU (100–210 ms of wall time).

A call waits at most `wait` seconds for its pipeline to leave. One that waited that long is
told apart by why: Redis answered other calls meanwhile (`Saturated`: this worker has more
to say than its lanes carry, Redis is fine), or it did not (`Unavailable`: Redis is down or
stalled). A pipeline that fails on the connection fails every call queued behind it as well:
they would meet the same Redis, one flight at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from rooms.errors import Unavailable
from server.broker import Saturated

# Defaults, with the measurements behind them (Redis 7.0 on localhost, 2 shared cores)
LANES = 4  # pipelines in flight. 2,000 releases at once took 100–200 ms on 1, 2, 4 or 8 lanes
# alike (Redis runs one command at a time: the batching is what saves); 4 keep one slow reply,
# such as the members of a room of thousands, from holding up everything else.
BATCH = 512  # commands per pipeline. Those 2,000 releases cost the worker 116–124 ms of CPU
# in pipelines of 16, 75–107 ms in pipelines of 512 or 1,024. Redis spends about 17 µs on a
# presence script, so a pipeline of 512 holds it for about 9 ms.
WAIT = 5.0  # seconds a call may wait for its pipeline to leave. The 6,000 calls of 2,000
# sockets closing at once (releases, counts, announcements) were all answered within
# 0.25–0.35 s here: this is over 14 times that.


@dataclass(frozen=True, slots=True)
class Command:
    """One command: EVALSHA of `script` with `keys` and `args`, or, without a script, `args`
    as a plain command (`("ZREM", key, member)`)."""

    args: Sequence[Any]
    keys: Sequence[str] = ()
    script: AsyncScript | None = None


def script(script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Command:
    return Command(args, keys, script)


def command(*args: Any) -> Command:
    return Command(args)


@dataclass(slots=True, eq=False)
class _Call:
    command: Command
    future: asyncio.Future[Any]
    boarded: bool = False


class RedisCommands:
    """The worker's command client, shared by the broker's publishes, presence, limits and
    locks. `run` and `run_all` return once Redis answered; a failure is `Unavailable` (or
    `Saturated`) whose cause is the Redis exception and whose message says what it means."""

    def __init__(self, client: Redis, *, lanes: int = LANES, batch: int = BATCH, wait: float = WAIT) -> None:
        self.client = client
        self.lanes = lanes
        self.batch = batch
        self.wait = wait
        self._queue: deque[_Call] = deque()
        self._flights: set[asyncio.Task[None]] = set()
        self._direct = 0  # calls on their way in their caller's own task (each holds a lane)
        self._boarding = 0  # flights started that have not taken their first batch yet
        self._answered = 0.0  # loop time of the last reply from Redis
        self.pipelines = 0  # pipelines sent (more than one command): for tests and benches

    def register_script(self, source: str) -> AsyncScript:
        return self.client.register_script(source)

    async def run(self, command: Command) -> Any:
        [reply] = await self.run_all([command])
        return reply

    async def run_all(self, commands: Sequence[Command]) -> list[Any]:
        """Run every command, perhaps over several pipelines in flight at once (so in no
        particular order); their replies in the order given, or the first failure."""
        if not commands:
            return []
        if not self._queue and self._direct + len(self._flights) < self.lanes and len(commands) <= self.batch:
            replies = await self._at_once(commands)  # a lane is free and nobody waits
        else:
            replies = await self._queued(commands)
        for reply in replies:
            if isinstance(reply, Exception):  # Redis answered this command with an error
                raise unavailable(reply) from reply
        return replies

    async def _at_once(self, commands: Sequence[Command]) -> list[Any]:
        """Send from the caller's own task: an idle worker's call costs what a plain
        client's does (a queued call costs a task switch more)."""
        self._direct += 1
        try:
            return await self._exchange(commands)
        except Exception as exc:
            self._failed(exc)
            raise unavailable(exc) from exc
        finally:
            self._direct -= 1
            self._kick()  # what queued meanwhile

    async def _queued(self, commands: Sequence[Command]) -> list[Any]:
        loop = asyncio.get_running_loop()
        calls = [_Call(c, loop.create_future()) for c in commands]
        self._queue.extend(calls)
        self._kick()
        timer = loop.call_later(self.wait, self._expire, calls, loop.time())
        try:
            if len(calls) == 1:
                return [await calls[0].future]
            return list(await asyncio.gather(*(call.future for call in calls)))
        except Unavailable:
            raise
        except Exception as exc:
            raise unavailable(exc) from exc
        finally:
            timer.cancel()

    def _expire(self, calls: list[_Call], queued: float) -> None:
        """A call still queued after `wait` gives up, saying why (one already on its way
        waits for its reply: its socket timeout bounds it)."""
        if all(call.boarded or call.future.done() for call in calls):
            return
        if self._answered >= queued:
            late: Unavailable = Saturated(
                f"Redis answers, but this worker's calls waited over {self.wait:g} s for a connection."
            )
        else:
            late = Unavailable(f"Redis has not answered for {self.wait:g} s.")
        for call in calls:
            if not call.future.done():
                call.future.set_exception(late)  # and a flight skips it

    async def aclose(self) -> None:
        for flight in list(self._flights):
            flight.cancel()
        await asyncio.gather(*self._flights, return_exceptions=True)
        self._fail(self._take_all(), rx.ConnectionError("closing"))

    # The flights

    def _kick(self) -> None:
        """Start flights for what is queued, up to `lanes` in the air."""
        while self._direct + len(self._flights) < self.lanes and len(self._queue) > self._boarding * self.batch:
            self._boarding += 1
            self._flights.add(asyncio.create_task(self._fly(), name="redis pipeline"))

    async def _fly(self) -> None:
        """Carry batches until the queue is empty. A task starts a loop turn after it was
        made, so every call made in that turn boards its first pipeline."""
        self._boarding -= 1
        try:
            while batch := self._take():
                try:
                    replies = await self._exchange([call.command for call in batch])
                except asyncio.CancelledError:
                    self._fail(batch, rx.ConnectionError("closing"))
                    raise
                except Exception as exc:
                    self._fail(batch, exc)
                    self._failed(exc)
                    continue
                for call, reply in zip(batch, replies, strict=True):
                    if not call.future.done():
                        call.future.set_result(reply)  # (an error reply is raised by `run_all`)
        finally:  # at once, not in a done callback: a call made meanwhile must find the lane free
            self._flights.discard(asyncio.current_task())

    def _take(self) -> list[_Call]:
        batch: list[_Call] = []
        while self._queue and len(batch) < self.batch:
            call = self._queue.popleft()
            if not call.future.done():  # (one that gave up is skipped)
                call.boarded = True
                batch.append(call)
        return batch

    def _take_all(self) -> list[_Call]:
        taken = list(self._queue)
        self._queue.clear()
        return taken

    async def _exchange(self, commands: Sequence[Command]) -> list[Any]:
        """Send `commands`, one alone or all in one pipeline; their replies, a command's
        error reply in its place. Raises when the connection fails."""
        if len(commands) == 1:  # one round trip (a pipeline of scripts asks SCRIPT EXISTS first)
            [c] = commands
            try:
                if c.script is None:
                    reply = await self.client.execute_command(*c.args)  # type: ignore[no-untyped-call]
                else:
                    reply = await c.script(keys=c.keys, args=c.args)
            except rx.ResponseError as exc:
                reply = exc
            replies = [reply]
        else:
            self.pipelines += 1
            async with self.client.pipeline(transaction=False) as pipe:
                for c in commands:
                    if c.script is None:
                        pipe.execute_command(*c.args)
                    else:
                        await c.script(keys=c.keys, args=c.args, client=pipe)
                replies = await pipe.execute(raise_on_error=False)
        self._answered = asyncio.get_running_loop().time()
        return replies

    def _failed(self, exc: Exception) -> None:
        """A connection failed: everything queued would meet the same Redis, one flight at a
        time, so it fails now."""
        if isinstance(exc, rx.ConnectionError | rx.TimeoutError | OSError):
            self._fail(self._take_all(), exc)

    @staticmethod
    def _fail(calls: list[_Call], exc: BaseException) -> None:
        for call in calls:
            if not call.future.done():
                call.future.set_exception(exc)


# What each failure means, for the log: the exception's own text may carry addresses or
# arguments, so only its type and this sentence are shown.
_MEANINGS: list[tuple[type[BaseException], str]] = [
    (rx.AuthenticationError, "Redis refused the credentials."),
    (rx.BusyLoadingError, "Redis is loading its data set."),
    (rx.ConnectionError, "Redis refused or dropped the connection."),
    (rx.TimeoutError, "Redis did not answer within the socket timeout."),
    (rx.OutOfMemoryError, "Redis is out of memory (maxmemory)."),
    (rx.ReadOnlyError, "Redis is a read-only replica."),
    (rx.NoScriptError, "Redis lost the scripts and could not load them again."),
    (rx.ResponseError, "Redis refused the command."),
    (TimeoutError, "Redis did not answer in time."),
    (OSError, "The network to Redis failed."),
]


def unavailable(exc: BaseException) -> Unavailable:
    """A Redis failure as the error callers handle, its message saying what it means. (The
    pool never runs out: it holds a connection per lane, and no more lanes than that fly.)"""
    if isinstance(exc, Unavailable):
        return exc
    for kind, meaning in _MEANINGS:
        if isinstance(exc, kind):
            return Unavailable(meaning)
    return Unavailable("A call to Redis failed unexpectedly.")
