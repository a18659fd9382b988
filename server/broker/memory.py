"""MemoryBroker: the embedded default, and the reference semantics for every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rooms.model import RoomId
from rooms.ports import Broker


class MemoryBroker:
    """Pub/sub inside one process. A publish reaches every current subscriber of the room,
    in publish order, and never blocks: subscribers read from unbounded in-process queues
    that their feed drains at once (a feed, not a client, reads them).
    """

    def __init__(self) -> None:
        self._subscribers: dict[RoomId, set[asyncio.Queue[bytes]]] = {}

    async def publish(self, room: RoomId, event: bytes) -> None:
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
