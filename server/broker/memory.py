"""The embedded default: broker, limiter and locks of one process, and the reference semantics
for every backend."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from rooms.limits import TokenBucket
from rooms.model import RoomId, UserId
from rooms.ports import Broker, Lease, Limiter, Locks


class MemoryBroker:
    """Pub/sub inside one process. A publish reaches every current subscriber of the room,
    in publish order, and never blocks: subscribers read from unbounded in-process queues
    that their feed drains at once (a feed, not a client, reads them).
    """

    reaches_other_workers = False

    def __init__(self) -> None:
        self._subscribers: dict[RoomId, set[asyncio.Queue[bytes]]] = {}

    async def publish(self, messages: Sequence[tuple[RoomId, bytes]]) -> None:
        for room, event in messages:
            for queue in self._subscribers.get(room, ()):
                queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self, room: RoomId) -> AsyncIterator[AsyncIterator[bytes]]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._subscribers.setdefault(room, set()).add(queue)

        async def messages() -> AsyncIterator[bytes]:
            while True:
                yield await queue.get()

        try:
            yield messages()
        finally:
            subscribers = self._subscribers.get(room)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    del self._subscribers[room]

    healthy = True

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        self._subscribers.clear()


_: type[Broker] = MemoryBroker


class MemoryLimiter:
    """Limits of a single process: token buckets and connection counts in dicts.

    At most `size` buckets are kept. Past that, buckets that have refilled are dropped (a new
    one is the same), then the least recently used: never all at once, which would hand
    everyone their burst again (and anyone can make keys: every username tried makes one).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, size: int = 100_000) -> None:
        self.clock = clock
        self.size = size
        self._buckets: dict[str, TokenBucket] = {}  # least recently used first
        self._conns: dict[str, set[str]] = {}

    async def take(self, key: str, rate: float, burst: float) -> float:
        now = self.clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            if len(self._buckets) >= self.size:
                self._evict(now)
            bucket = TokenBucket(rate, burst, now)
        self._buckets[key] = bucket
        return bucket.take(now)

    def _evict(self, now: float) -> None:
        full = [key for key, bucket in self._buckets.items() if bucket.full(now)]
        if len(full) < self.size // 4:
            full += list(itertools.islice(self._buckets, self.size // 4 - len(full)))
        for key in full:
            self._buckets.pop(key, None)

    async def open_conn(self, user: UserId, conn: str, limit: int) -> bool:
        conns = self._conns.setdefault(user, set())
        if conn not in conns and len(conns) >= limit:
            return False
        conns.add(conn)
        return True

    async def close_conn(self, user: UserId, conn: str) -> None:
        conns = self._conns.get(user)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._conns[user]

    async def refresh_conns(self, conns: Sequence[tuple[UserId, str]]) -> None:
        return None


class MemoryLocks:
    """Locks of a single process, with the same expiry and fencing as RedisLocks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: dict[str, tuple[int, float]] = {}
        self._fences: dict[str, int] = {}

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        held = self._held.get(name)
        if held is not None and held[1] > self.clock():
            return None
        token = self._fences[name] = self._fences.get(name, 0) + 1
        self._held[name] = (token, self.clock() + ttl)
        return Lease(name, token)

    async def renew(self, lease: Lease, ttl: float) -> bool:
        held = self._held.get(lease.name)
        if held is None or held[0] != lease.token or held[1] <= self.clock():
            return False
        self._held[lease.name] = (lease.token, self.clock() + ttl)
        return True

    async def release(self, lease: Lease) -> None:
        held = self._held.get(lease.name)
        if held is not None and held[0] == lease.token:
            del self._held[lease.name]


_limiter: type[Limiter] = MemoryLimiter
_locks: type[Locks] = MemoryLocks
