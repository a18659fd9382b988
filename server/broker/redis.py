"""RedisBroker: fan-out across any number of workers over Redis pub/sub (redis-py asyncio).

One pub/sub connection per worker, held by a supervised listener; every other command (the
publishes, and presence, limits and locks) goes through `RedisCommands`, which pipelines a
burst of calls over a few connections of a pool it never exhausts. A room's channel is
subscribed when its first local subscriber arrives, and `subscribe` returns only once
Redis confirmed it. When the connection drops, every open subscription ends with
`Unavailable`: its feed subscribes again once Redis is back and fills the gap from the
store, so nothing published meanwhile is missed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection

from rooms.errors import Unavailable
from rooms.model import RoomId
from rooms.ports import Broker
from server.broker.redis_commands import BATCH, LANES, WAIT, RedisCommands, command

log = logging.getLogger("hearth.broker")

_LOST = object()  # put in every queue when the pub/sub connection drops


class RedisBroker:
    """Pub/sub on Redis. Also lends its command client (`commands`) and key `prefix` to the
    other Redis-backed parts of a worker (presence, limits, locks)."""

    reaches_other_workers = True

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "hearth:",
        # Timeouts
        ping_interval: float = 3.0,
        confirm_timeout: float = 5.0,
        # Commands: see redis_commands.py for the measurements
        lanes: int = LANES,
        batch: int = BATCH,
        wait: float = WAIT,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ping_interval = ping_interval
        self.confirm_timeout = confirm_timeout
        # One connection per lane, and no more: the lanes never ask for another. Blocking all
        # the same, so that anything that did would wait for one (up to `wait`), where
        # redis-py's default pool (100) raises MaxConnectionsError at once.
        pool = BlockingConnectionPool.from_url(
            url, max_connections=lanes, timeout=wait, socket_connect_timeout=2.0, socket_timeout=5.0
        )
        self.commands = RedisCommands(Redis.from_pool(pool), lanes=lanes, batch=batch, wait=wait)
        # RESP2: pub/sub replies come back from read_response (RESP3 routes them to push handlers).
        self._pool = ConnectionPool.from_url(url, socket_connect_timeout=2.0, protocol=2)
        self._conn: AbstractConnection | None = None
        self._queues: dict[bytes, set[asyncio.Queue[Any]]] = {}
        self._upstream: set[bytes] = set()
        self._confirming: dict[bytes, asyncio.Future[None]] = {}
        self._write = asyncio.Lock()
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0

    @property
    def healthy(self) -> bool:
        return self._connected.is_set()

    def channel(self, room: RoomId) -> bytes:
        return f"{self.prefix}room:{room}".encode()

    # Lifecycle

    async def start(self, *, wait: float = 5.0) -> None:
        """Start the listener; wait a little for the first connection (it keeps trying anyway)."""
        self._task = asyncio.create_task(self._supervise(), name="redis listener")
        try:
            async with asyncio.timeout(wait):
                await self._connected.wait()
        except TimeoutError:
            log.warning("Redis is not reachable yet; running degraded until it is")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.commands.aclose()
        await self.commands.client.aclose()
        await self._pool.disconnect()

    # Broker

    async def publish(self, messages: Sequence[tuple[RoomId, bytes]]) -> None:
        """Publish on the command client, whatever the state of our own subscriptions; the
        events of a group commit, and the announcements of many connections at once, share
        pipelines."""
        await self.commands.run_all([command("PUBLISH", self.channel(room), event) for room, event in messages])

    @asynccontextmanager
    async def subscribe(self, room: RoomId) -> AsyncIterator[AsyncIterator[bytes]]:
        channel = self.channel(room)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues.setdefault(channel, set()).add(queue)
        try:
            await self._confirm(channel)
            yield self._messages(queue)
        finally:
            queues = self._queues.get(channel)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._queues[channel]
                    await self._unsubscribe(channel)

    async def _confirm(self, channel: bytes) -> None:
        if not self.healthy:
            raise Unavailable("The broker is unavailable.")
        if channel in self._upstream:
            return
        future = self._confirming.get(channel)
        if future is None:
            future = self._confirming[channel] = asyncio.get_running_loop().create_future()
            await self._command("SUBSCRIBE", channel)
        try:
            async with asyncio.timeout(self.confirm_timeout):
                await asyncio.shield(future)
        except TimeoutError as exc:
            raise Unavailable("The broker did not confirm the subscription.") from exc

    async def _unsubscribe(self, channel: bytes) -> None:
        if channel in self._upstream:
            self._upstream.discard(channel)
            try:
                await self._command("UNSUBSCRIBE", channel)
            except Unavailable:
                pass  # the connection is gone, and the subscription with it

    async def _command(self, *args: Any) -> None:
        conn = self._conn
        if conn is None:
            raise Unavailable("The broker is unavailable.")
        try:
            async with self._write:
                await conn.send_command(*args)
        except Exception as exc:
            raise Unavailable("The broker is unavailable.") from exc

    @staticmethod
    async def _messages(queue: asyncio.Queue[Any]) -> AsyncIterator[bytes]:
        while True:
            item = await queue.get()
            if item is _LOST:
                raise Unavailable("The broker connection was lost.")
            yield item

    # The listener

    async def _supervise(self) -> None:
        """Keep one pub/sub connection up: connect, listen, and on any failure start over."""
        delay = 0.1
        while True:
            conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.connect()
                self._conn = conn
                self._connected.set()
                if self.reconnects:
                    log.info("Redis pub/sub reconnected")
                delay = 0.1
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._listen(conn))
                    group.create_task(self._keepalive())
            except asyncio.CancelledError:
                self._drop()
                await conn.disconnect()
                raise
            except BaseException as exc:  # includes the TaskGroup's ExceptionGroup
                if self._connected.is_set():
                    log.warning("Redis pub/sub connection lost (%s)", type(exc).__name__)
                    self.reconnects += 1
                self._drop()
                await conn.disconnect()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _drop(self) -> None:
        """Forget the connection and end every subscription, so each feed fills its gap."""
        self._connected.clear()
        self._conn = None
        self._upstream.clear()
        for future in self._confirming.values():
            if not future.done():
                future.set_exception(Unavailable("The broker connection was lost."))
                future.exception()  # retrieved: a waiter may have gone
        self._confirming.clear()
        for queues in self._queues.values():
            for queue in queues:
                queue.put_nowait(_LOST)
        self._queues.clear()

    async def _listen(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        self._last_pong = loop.time()
        while True:
            reply = await conn.read_response(timeout=math.inf)
            kind = reply[0]
            if kind == b"message":
                for queue in self._queues.get(reply[1], ()):
                    queue.put_nowait(reply[2])
            elif kind == b"subscribe":
                self._upstream.add(reply[1])
                future = self._confirming.pop(reply[1], None)
                if future is not None and not future.done():
                    future.set_result(None)
                if reply[1] not in self._queues:  # its subscriber left before the confirmation
                    await self._unsubscribe(reply[1])
            elif kind == b"pong":
                self._last_pong = loop.time()

    async def _keepalive(self) -> None:
        """PING on the pub/sub connection; a silent connection is a dead one."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.ping_interval)
            if loop.time() - self._last_pong > 3 * self.ping_interval:
                raise ConnectionError("no pong from Redis")
            await self._command("PING")


_: type[Broker] = RedisBroker
