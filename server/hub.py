"""Hub: this worker's live side. Connections, room feeds, presence, and the shutdown drain."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgpack

from presence.registry import ConnectionRegistry
from presence.tracker import PresenceTracker
from rooms.errors import HearthError, RateLimited, Unavailable
from rooms.hours import status
from rooms.model import Event, Room, RoomId, User, UserId
from rooms.paging import newest_within
from rooms.service import RoomService
from server.auth import Accounts
from server.broker import Backend, Saturated, Shared
from server.broker.memory import MemoryLimiter
from server.closecodes import CLOSE_RESTARTING, CLOSE_UNAUTHENTICATED
from server.codec import Codec, make_codecs
from server.committer import GroupCommitter, Outgoing
from server.connection import Budget, Connection, Wire
from server.fanout import ORIGIN, SKIP, RoomFeed, pack
from server.live import LiveDesk
from server.metrics import Metrics
from server.settings import Settings
from server.store.directory import SqlDirectory
from server.store.outbox import SqlOutbox
from server.store.sql import SqlTranscriptStore

log = logging.getLogger("hearth.hub")

CONTROL = RoomId("_control")  # the broker channel for notices to people, not rooms
RENEW_BATCH = 1000  # presence leases renewed per Redis pipeline in a heartbeat


class Hub:
    """Everything a connection needs, built once per worker by the app's lifespan."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: SqlTranscriptStore,
        directory: SqlDirectory,
        broker: Backend,
        shared: Shared,
        accounts: Accounts,
        outbox: SqlOutbox,
    ) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.store = store
        self.directory = directory
        self.broker = broker
        self.shared = shared
        self.accounts = accounts
        self.worker = secrets.token_hex(8)
        self.codecs = make_codecs(max_depth=settings.limits.max_depth)
        self.service = RoomService(directory, store, max_text=settings.limits.max_text)
        self.metrics = Metrics()
        self.committer = GroupCommitter(
            store, self.prepare, self._broadcast, max_batch=settings.commit_batch, metrics=self.metrics
        )
        self.desk = LiveDesk(self)
        self.outbox = outbox  # where reminders for e-mail and SMS go
        self.registry: ConnectionRegistry[Connection] = ConnectionRegistry()
        self.budgets: dict[str, Budget] = {}  # bytes held back per user, for their connections here
        self.fallback = MemoryLimiter()  # this worker's own limits, while the shared ones are away
        self.local = PresenceTracker()  # this worker's connections per room (what heartbeats renew)
        self.feeds: dict[RoomId, RoomFeed] = {}
        self._feed_locks: dict[RoomId, asyncio.Lock] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._degraded: set[str] = set()
        self.draining = False
        self._emptied = asyncio.Event()

    @staticmethod
    def clock() -> float:
        return time.monotonic()

    def start(self) -> None:
        self.metrics.watch_gc()
        self.committer.start()
        self.desk.start()
        self._heartbeat = asyncio.create_task(self._beat(), name="presence heartbeat")
        self._listener = asyncio.create_task(self._control(), name="control channel")

    def connection(self, wire: Wire, codec: Codec) -> Connection:
        return Connection(wire, codec, self.limits, self.clock(), self.metrics)

    async def register(self, conn: Connection, user: User, token_id: str) -> None:
        """A connection signed in; refuses one over the user's connection limit (all workers)."""
        if self.draining:
            raise Unavailable("Hearth is restarting. Reconnect and resume.")
        limit = self.limits.user_connections
        allowed = await self._shared(self.shared.limiter.open_conn(user.id, conn.id, limit))
        if allowed is None:  # shared state is away: this worker's own count, at least
            allowed = sum(c.user_id == user.id for c in self.registry.all()) < limit
        if not allowed:
            raise RateLimited("Too many open connections for this account. Close one and retry.", retry_after=5.0)
        conn.user = user
        conn.token_id = token_id
        budget = conn.budget = self.budgets.get(user.id) or self.budgets.setdefault(user.id, Budget())
        budget.users += 1
        self.registry.add(conn)

    async def check_user_rate(self, user: User) -> None:
        """The per-user rate of durable events, counted across every worker (by this worker
        alone while shared state is away)."""
        key, rate, burst = f"{user.id}:events", self.limits.user_rate, self.limits.user_burst
        wait = await self._shared(self.shared.limiter.take(key, rate, burst))
        if wait is None:
            wait = await self.fallback.take(key, rate, burst)
        if wait:
            raise RateLimited("You are sending too fast. Slow down.", retry_after=wait)

    # Fan-out

    def prepare(self, events: Sequence[Event]) -> tuple[list[Outgoing], Callable[[], None]]:
        """Committed events, in seq order: packed for the broker, one message per room (the
        committer publishes them to the other workers), and their delivery to this worker's
        members, to run once that publish is on its way."""
        by_room: dict[RoomId, list[dict[str, Any]]] = {}
        for event in events:
            by_room.setdefault(event.room, []).append(event.to_wire())
        outgoing = [(room, pack(batch)) for room, batch in by_room.items()] if self.broker.reaches_other_workers else []

        def deliver() -> None:
            for room, batch in by_room.items():
                if (feed := self.feeds.get(room)) is not None:
                    try:
                        feed.accept_all(batch, local=True)  # (packed already: theirs now)
                    except Exception:  # durable already: the other workers still get it, and so
                        log.exception("local delivery failed room=%s", room)  # do resumes here

        return outgoing, deliver

    async def publish_ephemeral(self, room: RoomId, event: dict[str, Any]) -> None:
        feed = self.feeds.get(room)
        if feed is not None:
            feed.accept(dict(event), local=True)
        await self._publish_one(room, {**event, ORIGIN: self.worker})

    async def _publish_one(self, room: RoomId, payload: Mapping[str, Any]) -> None:
        """One message to the other workers (there are none behind a broker inside one process)."""
        if self.broker.reaches_other_workers:
            await self._broadcast([(room, pack(payload))])

    async def _broadcast(self, messages: Sequence[Outgoing]) -> None:
        if not messages:
            return
        try:
            await self.broker.publish(messages)
        except Unavailable:  # durable events reach the other workers by gap fill later
            self._note_degraded("broker")

    # Rooms

    async def join(
        self,
        conn: Connection,
        room: Room,
        since: int | None,
        reply: Callable[[dict[str, Any]], None],
        *,
        facilitator: bool = False,
    ) -> None:
        """Attach `conn` to the room's feed, `reply` with the join result, tell the others.

        `reply` runs at the very moment `conn` goes live, so the join reply reaches the
        client ahead of every live event. While a session is open, a member who is not in
        it waits in its lobby: they see the session's state and nothing of the room.
        """
        user = conn.user
        assert user is not None
        feed = await self._feed(room.id)  # reserved for this join until the `finally`
        try:
            if facilitator:
                conn.mark(room.id, facilitating=True)
            waiting = await self.desk.arrive(feed, conn, facilitator)
            now = datetime.now(UTC)
            present = [] if waiting else await self._present(room.id, self.card(conn, room.id))

            def go_live(latest: int, events: list[dict[str, Any]], recovered: bool, waiting: bool) -> None:
                # `waiting` as placed now: the session may have let them in meanwhile
                conn.rooms.add(room.id)
                session = feed.live.active
                view = None
                if session is not None:
                    view = session.lobby_view() if waiting else session.public()
                    if facilitator or session.facilitates(user.id):
                        view = session.for_facilitators()
                shown = self.within_reply(conn, events)
                reply(
                    {
                        "room": room.public() | ({"hours": status(room.open_hours, now)} if room.open_hours else {}),
                        "seq": latest,
                        "presence": present,
                        "events": shown,
                        "recovered": recovered and len(shown) == len(events),
                        "session": view,
                        "waiting": waiting,
                    }
                )

            await feed.attach(conn, since, go_live, waiting=waiting)
        finally:
            feed.reserved -= 1
            if room.id not in conn.rooms:
                conn.mark(room.id, facilitating=False, on_duty=False)
                await self._release(feed)
        self.metrics.joins.inc()
        if not waiting and room.id in conn.rooms:  # (not if it was closed meanwhile: a removal)
            await self.arrived(conn, room.id)

    def within_reply(self, conn: Connection, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The newest of `events` that one reply may carry (`limits.reply_bytes`, as encoded
        for this connection): a join or a page of history never holds megabytes for a client."""
        if len(events) < 2:
            return events
        return newest_within(events, self.limits.reply_bytes, lambda e: len(conn.codec.encode(e)))

    async def members(self, room: RoomId) -> list[dict[str, str]]:
        """Who is in the room, on every worker (on this one alone while Redis is down)."""
        present = await self._shared(self.shared.presence.members(room))
        return list(self.local.members(room) if present is None else present)

    async def _present(self, room: RoomId, mine: dict[str, Any]) -> list[dict[str, Any]]:
        present: list[dict[str, Any]] = [card for card in await self.members(room) if card["id"] != mine["id"]]
        return [*present, mine]

    # Notices to people wherever they are connected (reminders)

    async def notify(self, users: Sequence[str], event: Mapping[str, Any]) -> None:
        """Push `event` to every connection of `users`: on this worker at once, on the others
        through the broker's control channel."""
        self._notify_local(set(users), event)
        await self._publish_one(CONTROL, {"users": list(users), "event": dict(event), ORIGIN: self.worker})

    def _notify_local(self, users: set[str], event: Mapping[str, Any]) -> None:
        frames: dict[str, bytes] = {}
        for conn in self.registry.all():
            if conn.user_id in users:
                frame = frames.get(conn.codec.name) or frames.setdefault(conn.codec.name, conn.codec.frame(event))
                conn.push(frame)

    # Changes every worker must act on at once: a role in a room, a token signed out

    async def membership_changed(self, room: RoomId, user: UserId) -> None:
        """`user`'s role in `room` changed: every worker forgets what it remembered of it and
        gives that user's open connections there the rights of the new role (a facilitator
        made a member stops seeing the lobby's knocks and the attendance at once)."""
        await self._publish_one(CONTROL, {"membership": [room, user], ORIGIN: self.worker})
        await self._recheck(room, user)

    async def _recheck(self, room: RoomId, user: UserId) -> None:
        self.directory.recent.drop(("member", room, user))
        for conn in self.registry.all():
            if conn.user is not None and conn.user.id == user and room in conn.rooms:
                conn.mark(room, facilitating=await self.service.facilitates(conn.user, room))

    async def signed_out(self, token_id: str) -> None:
        """A token was revoked: its sockets close on every worker now (the heartbeat's reload
        of revocations catches any notice lost on the way)."""
        self.revoke(token_id)
        await self._publish_one(CONTROL, {"revoked": token_id, ORIGIN: self.worker})

    async def _control(self) -> None:
        """Listen on the control channel for notices from the other workers."""
        while True:
            try:
                async with self.broker.subscribe(CONTROL) as messages:
                    async for raw in messages:
                        notice = msgpack.unpackb(raw, raw=False)
                        if notice.get(ORIGIN) != self.worker:
                            await self._act_on(notice)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._note_degraded("broker")
                log.debug("control channel: %s", type(exc).__name__)
            await asyncio.sleep(1.0)

    async def _act_on(self, notice: Mapping[str, Any]) -> None:
        """One notice from another worker. A failure here (the store, for a role) is logged
        and the listening goes on: the subscription is not what failed."""
        try:
            if "membership" in notice:
                room, user = notice["membership"]
                await self._recheck(RoomId(room), UserId(user))
            elif "revoked" in notice:
                self.revoke(notice["revoked"])
            else:
                self._notify_local(set(notice["users"]), notice["event"])
        except Exception:
            log.exception("control notice failed")

    @staticmethod
    def card(conn: Connection, room: RoomId) -> dict[str, Any]:
        """What others see of a connection's user in a room: staff on duty say so."""
        assert conn.user is not None
        card: dict[str, Any] = conn.user.public()
        if room in conn.on_duty:
            card["on_duty"] = True
        return card

    async def arrived(self, conn: Connection, room: RoomId) -> None:
        """`conn` is in the room (joined, or let in from the lobby): lease its presence and,
        for a user's first connection there, tell the others and note their attendance."""
        user = conn.user
        assert user is not None
        card = self.card(conn, room)
        self.local.add(room, user.id, conn.id, card)
        if await self._shared(self.shared.presence.add(room, user.id, conn.id, card)):
            await self._announce(room, card, "joined")
            if (feed := self.feeds.get(room)) is not None:
                try:  # the join was answered already: a failure here is only logged
                    await self.desk.attendance(feed, user.id, present=True)
                except HearthError as exc:
                    log.warning("attendance on arrival failed room=%s: %s", room, exc.code)

    async def leave(self, conn: Connection, room: RoomId) -> None:
        conn.rooms.discard(room)
        conn.mark(room, facilitating=False, on_duty=False)
        feed = self.feeds.get(room)
        waiting = feed is not None and conn.id in feed.waiting
        if feed is not None:
            feed.detach(conn)
        if conn.user is not None:
            gone = False
            if not waiting:  # the lobby holds no presence
                self.local.remove(room, conn.user.id, conn.id)
                gone = bool(await self._shared(self.shared.presence.remove(room, conn.user.id, conn.id)))
            if gone:
                await self._announce(room, conn.user.public(), "left")
            if feed is not None:
                await self.desk.depart(feed, conn.user, gone=gone, waiting=waiting)
        if feed is not None:
            await self._release(feed)

    async def typing(self, conn: Connection, room: RoomId) -> None:
        assert conn.user is not None
        if self.local.typing(room, conn.user.id, self.clock()):
            await self.publish_ephemeral(
                room, {"ev": "typing", "room": room, "user": conn.user.public(), SKIP: conn.user.id}
            )

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
        conn.forget()
        if conn.user is not None:  # set only once `register` counted the connection
            budget = conn.budget
            if budget is not None:
                budget.users -= 1
                if not budget.users and self.budgets.get(conn.user.id) is budget:
                    del self.budgets[conn.user.id]
            await self._shared(self.shared.limiter.close_conn(conn.user.id, conn.id))
        self.registry.discard(conn)
        if not len(self.registry):
            self._emptied.set()

    async def _announce(self, room: RoomId, card: Mapping[str, str], change: str) -> None:
        event: dict[str, Any] = {"ev": "presence", "room": room, "joined": [], "left": [], SKIP: card["id"]}
        event[change] = [dict(card)]
        await self.publish_ephemeral(room, event)

    async def _feed(self, room: RoomId) -> RoomFeed:
        lock = self._feed_locks.setdefault(room, asyncio.Lock())
        async with lock:
            feed = self.feeds.get(room)
            if feed is None:
                feed = RoomFeed(
                    room,
                    self.broker,
                    self.store,
                    worker=self.worker,
                    metrics=self.metrics,
                    ring=self.limits.ring,
                    resume_max=self.limits.resume_max,
                    gap_wait=self.settings.gap_wait,
                )
                self.desk.watch(feed)
                await feed.start()
                self.feeds[room] = feed
            feed.reserved += 1
            return feed

    async def _release(self, feed: RoomFeed) -> None:
        """Stop a feed nobody on this worker listens to any more (unsubscribes upstream)."""
        if feed.idle and self.feeds.get(feed.room) is feed:
            del self.feeds[feed.room]
            self._feed_locks.pop(feed.room, None)
            await feed.stop()

    # Shared state: presence leases and connection counts, kept alive by a heartbeat

    async def _shared(self, call: Any) -> Any:
        """Await a call on shared state; while it is down, carry on without it (None)."""
        try:
            result = await call
        except Unavailable as exc:
            self._note_degraded("shared state", exc)
            return None
        return result

    def _note_degraded(self, part: str, exc: BaseException | None = None) -> None:
        """Say once, until the heartbeat finds it back, that `part` failed and why: the
        exception's type and what it means (never its text, which may carry arguments).
        Called in an `except` block, `exc` defaults to the exception being handled. A call
        that waited its whole bound for a connection (`Saturated`) is this worker's load,
        not an outage, and is logged as such."""
        exc = exc if exc is not None else sys.exception()
        cause = exc.__cause__ if exc is not None and exc.__cause__ is not None else exc
        why = type(cause).__name__ if cause is not None else "unknown"
        if isinstance(exc, HearthError):
            why += f": {exc.message}"
        busy = isinstance(exc, Saturated)
        key = f"{part} busy" if busy else part
        if key not in self._degraded:
            self._degraded.add(key)
            if busy:
                log.warning("%s busy, not down (%s)", part, why)
            else:
                log.warning("%s unavailable (%s): running degraded until it is back", part, why)

    @property
    def degraded(self) -> bool:
        return not self.broker.healthy

    async def _beat(self) -> None:
        """Every quarter lease: renew this worker's leases, sweep its rooms for users of dead
        workers, catch its feeds up with the store (a lost publish waits at most this long),
        and close sockets whose token was revoked on another worker."""
        while True:
            await asyncio.sleep(self.settings.presence_ttl / 4)
            try:  # from the store: needed most when Redis is away
                latest = await self.store.last_seqs(list(self.feeds))
                for room, seq in latest.items():
                    if (feed := self.feeds.get(room)) is not None:
                        feed.expect(seq)
                revoked = await self.directory.load_revoked()
                for jti in {c.token_id for c in self.registry.all()} & revoked:
                    self.revoke(jti)
            except Unavailable:
                pass  # the store is down: its own errors say so
            except Exception:
                log.exception("store check in the heartbeat failed")
            try:  # on Redis
                await self._renew()
                if self._degraded:
                    log.info("shared state is back")
                    self._degraded.clear()
            except Unavailable:
                self._note_degraded("shared state")
            except Exception:
                log.exception("presence heartbeat failed")

    async def _renew(self) -> None:
        """Renew this worker's leases and connection counts, and sweep its rooms. The calls
        of each step go out together, and so do the announcements they lead to: 500 rooms
        swept one after another took 61-91 ms, together 19-23 ms; 2,000 announcements of
        lapsed leases 192-226 ms, together 75-101 ms."""
        leases = self.local.leases()
        for start in range(0, len(leases), RENEW_BATCH):  # a round trip per batch, not per lease
            batch = leases[start : start + RENEW_BATCH]
            ended, back = [], []
            for (room, user, conn, card), lapsed in zip(batch, await self.shared.presence.renew(batch), strict=True):
                if not self.local.holds(room, user, conn):  # it left while the renewal was on its way
                    ended.append(self.shared.presence.remove(room, user, conn))  # (its leave was announced)
                elif lapsed:
                    back.append(self._announce(RoomId(room), card, "joined"))
            await asyncio.gather(*ended, *back)
        await self.shared.limiter.refresh_conns([(c.user.id, c.id) for c in self.registry.all() if c.user])
        rooms = list(self.feeds)
        swept = await asyncio.gather(*(self.shared.presence.sweep(room) for room in rooms))
        gone = [(room, card) for room, cards in zip(rooms, swept, strict=True) for card in cards]
        await asyncio.gather(*(self._announce(room, card, "left") for room, card in gone))
        for room, card in gone:
            if (feed := self.feeds.get(room)) is not None:  # their worker died: its bookkeeping
                await self.desk.gone(feed, card["id"])

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
        self.metrics.unwatch_gc()
        await self.desk.close()
        for task in (self._heartbeat, self._listener):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.committer.close()
        for feed in list(self.feeds.values()):
            await feed.stop()
        self.feeds.clear()
