"""Brokers: fan committed events out to every worker. `open_broker(url)` picks one."""

from __future__ import annotations

from typing import Protocol

from rooms.ports import Broker


class Backend(Broker, Protocol):
    """What a worker needs of a broker beyond the domain's port: its lifecycle and health."""

    @property
    def healthy(self) -> bool: ...

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
