"""Brokers: fan committed events out to every worker. `open_broker(url)` picks one, and
`open_shared(broker)` the presence, limits and locks that go with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from presence.ports import PresenceStore
from presence.tracker import MemoryPresence
from rooms.errors import Unavailable
from rooms.ports import Broker, Limiter, Locks


class Saturated(Unavailable):
    """The backend answers, but a call of this worker waited its whole bound for a connection
    to it: more work than the worker's connections carry, not an outage."""


class Backend(Broker, Protocol):
    """What a worker needs of a broker beyond the domain's port: its lifecycle and health."""

    @property
    def healthy(self) -> bool: ...

    @property
    def reaches_other_workers(self) -> bool:
        """False for a broker inside one process: every subscriber is this worker's own,
        and it delivers locally first, so publishing would only echo back."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def open_broker(url: str, *, prefix: str = "hearth:") -> Backend:
    """`memory://` (one process) or `redis://…` / `rediss://…` (many workers).

    Backend modules are imported lazily so the embedded default needs no Redis client.
    """
    if url.startswith("memory://"):
        from server.broker.memory import MemoryBroker

        return MemoryBroker()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from server.broker.redis import RedisBroker

        return RedisBroker(url, prefix=prefix)
    raise ValueError(f"unsupported broker URL scheme: {url.split('://', 1)[0]}://")


@dataclass(frozen=True, slots=True)
class Shared:
    """What a worker shares with the others: presence, limits and locks, on the broker's backend."""

    presence: PresenceStore
    limiter: Limiter
    locks: Locks


def open_shared(broker: Backend, *, presence_ttl: float) -> Shared:
    """The memory implementations for the memory broker, the Redis ones for RedisBroker."""
    from server.broker.memory import MemoryBroker, MemoryLimiter, MemoryLocks

    if isinstance(broker, MemoryBroker):
        return Shared(MemoryPresence(), MemoryLimiter(), MemoryLocks())
    from server.broker.redis import RedisBroker
    from server.broker.redis_state import RedisLimiter, RedisLocks, RedisPresence, Scripts

    assert isinstance(broker, RedisBroker)
    scripts = Scripts(broker.commands)
    return Shared(
        RedisPresence(broker.commands, scripts, prefix=broker.prefix, ttl=presence_ttl),
        RedisLimiter(broker.commands, scripts, prefix=broker.prefix, ttl=presence_ttl),
        RedisLocks(broker.commands, scripts, prefix=broker.prefix),
    )
