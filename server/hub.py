"""Hub: this worker's live side. Connections, room feeds, presence, and the shutdown drain."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

from presence.registry import ConnectionRegistry
from presence.tracker import PresenceTracker
from rooms.model import Room, RoomId, User
from rooms.ports import Broker
from rooms.service import RoomService
from server.auth import Accounts
from server.closecodes import CLOSE_RESTARTING, CLOSE_UNAUTHENTICATED
from server.codec import Codec, make_codecs
from server.committer import GroupCommitter
from server.connection import Connection
from server.fanout import SKIP, RoomFeed, pack
from server.settings import Settings
from server.store.directory import SqlDirectory
from server.store.sql import SqlTranscriptStore

log = logging.getLogger("hearth.hub")


class Hub:
    """Everything a connection needs, built once per worker by the app's lifespan."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: SqlTranscriptStore,
        directory: SqlDirectory,
        broker: Broker,
        accounts: Accounts,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.store = store
        self.directory = directory
        self.broker = broker
        self.accounts = accounts
        self.codecs = make_codecs(max_depth=settings.limits.max_depth)
        self.service = RoomService(directory, store, max_text=settings.limits.max_text)
        self.committer = GroupCommitter(store, broker, max_batch=settings.commit_batch)
        self.registry: ConnectionRegistry[Connection] = ConnectionRegistry()
        self.presence = PresenceTracker()
        self.feeds: dict[RoomId, RoomFeed] = {}
        self._feed_locks: dict[RoomId, asyncio.Lock] = {}
        self.draining = False
        self._emptied = asyncio.Event()

    @staticmethod
    def clock() -> float:
        return time.monotonic()

    def start(self) -> None:
        self.committer.start()

    def connection(self, ws: WebSocket, codec: Codec) -> Connection:
        return Connection(ws, codec, self.limits, self.clock())

    def register(self, conn: Connection, user: User, token_id: str) -> None:
        conn.user = user
        conn.token_id = token_id
        self.registry.add(conn)

    # Rooms

    async def join(
        self, conn: Connection, room: Room, since: int | None, reply: Callable[[dict[str, Any]], None]
    ) -> None:
        """Attach `conn` to the room's feed, `reply` with the join result, tell the others.

        `reply` runs at the very moment `conn` goes live, so the join reply reaches the
        client ahead of every live event.
        """
        user = conn.user
        assert user is not None
        feed = await self._feed(room.id)
        arrived = False

        def go_live(latest: int, events: list[dict[str, Any]], recovered: bool) -> None:
            nonlocal arrived
            conn.rooms.add(room.id)
            arrived = self.presence.add(room.id, user.id, conn.id, user.public())
            presence = self.presence.members(room.id)
            reply(
                {"room": room.public(), "seq": latest, "presence": presence, "events": events, "recovered": recovered}
            )

        try:
            await feed.attach(conn, since, go_live)
        finally:
            if room.id not in conn.rooms:
                await self._release(feed)
        if arrived:
            await self._announce(room.id, user, "joined")

    async def leave(self, conn: Connection, room: RoomId) -> None:
        conn.rooms.discard(room)
        feed = self.feeds.get(room)
        if feed is not None:
            feed.detach(conn)
        if conn.user is not None and self.presence.remove(room, conn.user.id, conn.id):
            await self._announce(room, conn.user, "left")
        if feed is not None:
            await self._release(feed)

    async def typing(self, conn: Connection, room: RoomId) -> None:
        assert conn.user is not None
        if self.presence.typing(room, conn.user.id, self.clock()):
            event = {"ev": "typing", "room": room, "user": conn.user.public(), SKIP: conn.user.id}
            await self.broker.publish(room, pack(event))

    async def leave_all(self, conn: Connection) -> None:
        """Leave every room the connection is in (it is closing)."""
        for room in list(conn.rooms):
            try:
                await self.leave(conn, room)
            except Exception:
                log.exception("leave on disconnect failed conn=%s room=%s", conn.id, room)

    async def forget(self, conn: Connection) -> None:
        """The connection is gone: leave every room, drop it from the registry."""
        await self.leave_all(conn)
        self.registry.discard(conn)
        if not len(self.registry):
            self._emptied.set()

    async def _announce(self, room: RoomId, user: User, change: str) -> None:
        event: dict[str, Any] = {"ev": "presence", "room": room, "joined": [], "left": [], SKIP: user.id}
        event[change] = [user.public()]
        await self.broker.publish(room, pack(event))

    async def _feed(self, room: RoomId) -> RoomFeed:
        lock = self._feed_locks.setdefault(room, asyncio.Lock())
        async with lock:
            feed = self.feeds.get(room)
            if feed is None:
                feed = RoomFeed(
                    room,
                    self.broker,
                    self.store,
                    ring=self.limits.ring,
                    resume_max=self.limits.resume_max,
                    gap_wait=self.settings.gap_wait,
                )
                await feed.start()
                self.feeds[room] = feed
            return feed

    async def _release(self, feed: RoomFeed) -> None:
        """Stop a feed nobody on this worker listens to any more (unsubscribes upstream)."""
        if feed.idle and self.feeds.get(feed.room) is feed:
            del self.feeds[feed.room]
            self._feed_locks.pop(feed.room, None)
            await feed.stop()

    # Sessions

    def revoke(self, token_id: str) -> None:
        """Close every socket signed in with a token that was just revoked."""
        for conn in self.registry.with_token(token_id):
            conn.close_soon(CLOSE_UNAUTHENTICATED, "signed out")

    # Shutdown

    async def drain(self) -> None:
        """Stop taking commands, commit and acknowledge what is pending, close with 1012.

        Acknowledgements are pushed by the commit futures' callbacks, which run before
        `flush()` returns, so every ack is queued ahead of the close frame.
        """
        self.draining = True
        try:
            async with asyncio.timeout(self.settings.drain_timeout):
                await self.committer.flush()
                for conn in self.registry.all():
                    conn.close_soon(CLOSE_RESTARTING, "restarting: reconnect and resume")
                while len(self.registry):
                    self._emptied.clear()
                    await self._emptied.wait()
        except TimeoutError:
            log.warning("drain timed out with %d connections open", len(self.registry))

    async def close(self) -> None:
        await self.committer.close()
        for feed in list(self.feeds.values()):
            await feed.stop()
        self.feeds.clear()
