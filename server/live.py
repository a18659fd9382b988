"""The server side of live sessions: commits the domain's session events, moves people
between the lobby and the room, and runs the session clocks (timed shares, automatic end)
once across workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from rooms import live
from rooms.clock import now_ms, parse_ts
from rooms.errors import HearthError, Unavailable
from rooms.model import HEARTH, Event, EventKind, Member, NewEvent, RoomId, User
from rooms.ports import Locks, TranscriptStore
from server.committer import GroupCommitter
from server.fanout import Fanout
from server.feed import RoomFeed
from server.quotas import Quotas
from server.roster import Roster

if TYPE_CHECKING:
    from server.connection import Connection

log = logging.getLogger("hearth.live")

END_GRACE = 15 * 60  # seconds a session may run past its end before it ends by itself
TICK = 1.0  # seconds between checks of the session clocks
# Tokens a join that commits takes from its user's bucket of durable events: its own event
# (`waiting`, an automatic admission, attendance starting) and the departure it makes due
# (`left_lobby`, attendance ending). Unmetered beyond that, and bounded: an admission's
# attendance (once per user and session) and a lead handed on when the lead leaves.
ARRIVAL_COST = 2


class Turn:
    """A room's session lock on this worker, and how many hold it or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class LiveDesk:
    """Session work of one worker: commits session changes one at a time per room (across
    workers, by the room's lease), places arrivals in the lobby or the room, and runs the
    session clocks. `on_admitted` is told of each connection let in from a lobby."""

    def __init__(
        self,
        committer: GroupCommitter,
        store: TranscriptStore,
        locks: Locks,
        roster: Roster,
        fanout: Fanout,
        quotas: Quotas,
    ) -> None:
        self.committer = committer
        self.store = store
        self.locks = locks
        self.roster = roster
        self.fanout = fanout
        self.quotas = quotas
        self.on_admitted: Callable[[Connection, RoomId], Awaitable[None]] | None = None
        self._admitted: asyncio.Queue[tuple[Connection, RoomId]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._turns: dict[RoomId, Turn] = {}  # this worker's side of each room's turn, while in use

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._welcome(), name="session admissions"),
            asyncio.create_task(self._clocks(), name="session clocks"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def watch(self, feed: RoomFeed) -> None:
        feed.on_admitted = lambda conn, room: self._admitted.put_nowait((conn, room))

    # Committing

    @asynccontextmanager
    async def turn(self, room: RoomId, feed: RoomFeed | None = None) -> AsyncIterator[None]:
        """One session change at a time in a room: on this worker by a lock, across workers by
        the room's lease in Redis (while Redis is away, per worker only). The feed then
        catches up with the store, so the plan sees every earlier change. A room's lock is
        dropped once no one holds it or waits for it."""
        turn = self._turns.get(room)
        if turn is None:
            turn = self._turns[room] = Turn()
        turn.users += 1
        try:
            async with self._held(room, turn.lock, feed):
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[room]

    @asynccontextmanager
    async def _held(self, room: RoomId, lock: asyncio.Lock, feed: RoomFeed | None) -> AsyncIterator[None]:
        lease, held = None, False
        try:
            async with asyncio.timeout(5):
                await lock.acquire()
                held = True
                while True:  # a lease in Redis: there is nothing to wait on but time
                    lease = await self.locks.acquire(f"session:{room}", 10)
                    if lease is not None:
                        break
                    await asyncio.sleep(0.02)
        except Unavailable:
            lease = None  # Redis is away: this worker's lock alone
        except BaseException as exc:
            if held:
                lock.release()
            if isinstance(exc, TimeoutError):
                raise Unavailable("The session is busy. Please retry.") from exc
            raise
        try:
            if feed is not None and not await feed.reach(await self.store.last_seq(room)):
                raise Unavailable("The session is catching up. Please retry.")
            yield
        finally:
            lock.release()
            if lease is not None:
                await self.locks.release(lease)

    async def commit(self, feed: RoomFeed, sender: Member, *bodies: Mapping[str, Any]) -> Event:
        """Commit session events in order; return the first once this worker has applied all."""
        futures = [self.committer.submit(NewEvent(feed.room, EventKind.SESSION, sender, body)) for body in bodies]
        done = [await future for future in futures]
        await feed.reach(done[-1].seq)
        return done[0]

    # Arrivals and departures

    async def charge(self, user: User, tokens: int) -> None:
        """Take `tokens` from the user's bucket of durable events; RateLimited when it is empty."""
        for _ in range(tokens):
            await self.quotas.events(user)

    async def arrive(self, feed: RoomFeed, conn: Connection, facilitator: bool) -> bool:
        """Someone joins a room: True when they must wait in the session's lobby.

        A join that commits is charged ARRIVAL_COST first: for itself and for the departure it
        makes due, which is committed whatever the bucket says (or the lobby would keep a
        ghost). One that queues for the session's turn only to be refused (locked, removed)
        costs one token: the turn is a lease and a store read. Past the rate: RateLimited."""
        user, member = conn.user, conn.members[feed.room]
        assert user is not None
        session = feed.live.active
        if session is None:
            return False
        if session.inside(member.id):
            if feed.room not in conn.rooms:  # not a resume on a joined connection: it may start attendance
                await self.charge(user, ARRIVAL_COST)
            return False
        if facilitator:
            return False
        try:
            paid = 0 if live.plan_arrival(feed.live, member.id, member.public()) is None else ARRIVAL_COST
        except HearthError:
            paid = 1  # refused (removed, locked): decided again below, on the latest state
        if not paid:
            # Nothing to commit (already waiting): no turn to queue for, so a storm of resumes
            # into a live session does not line up behind one lease.
            return member.id in session.waiting
        await self.charge(user, paid)  # before the turn: a refused storm holds no lease
        async with self.turn(feed.room, feed):
            session = feed.live.active
            if session is None:
                return False
            plan = live.plan_arrival(feed.live, member.id, member.public())
            if plan is None:
                return member.id in session.waiting
            await self.charge(user, ARRIVAL_COST - paid)  # refused a moment ago, let in now
            await self.commit(feed, member, plan)
            return bool(plan["action"] == "waiting")

    async def depart(self, feed: RoomFeed, member: Member, *, gone: bool, waiting: bool) -> None:
        """A connection left the room; `gone` when it was the member's last one there. Nothing
        is charged: the arrival paid for it (ARRIVAL_COST)."""
        session = feed.live.active
        if session is None:
            return
        plan = live.plan_leave_lobby(feed.live, member.id) if waiting else None
        if plan is not None:
            if not any(c.who(feed.room) == member.id for c in feed.waiting.values()):
                try:
                    await self.commit(feed, member, plan)
                except HearthError as exc:
                    log.warning("leaving the lobby failed room=%s: %s", feed.room, exc.code)
        elif gone:
            await self.gone(feed, member.id)  # (never raises a HearthError)

    async def gone(self, feed: RoomFeed, user: str) -> None:
        """A member's last connection left the room (or their worker died): note the end of
        their attendance; if they led a live session, a co-facilitator present takes over."""
        session = feed.live.active
        if session is None:
            return
        try:
            await self.attendance(feed, user, present=False)
            if session.state == live.LIVE and session.lead == user:
                await self._promote(feed, session)
        except HearthError as exc:  # the heartbeat's sweep goes on to the next user
            log.warning("session bookkeeping on leave failed room=%s: %s", feed.room, exc.code)

    async def attendance(self, feed: RoomFeed, user: str, *, present: bool) -> None:
        session = feed.live.active
        if session is not None and session.inside(user):
            await self.commit(feed, HEARTH, {"action": "attendance", "user": user, "present": present, "to": []})

    async def _promote(self, feed: RoomFeed, session: live.LiveSession) -> None:
        """The lead facilitator's last connection dropped: a co-facilitator present takes over."""
        present = {card["id"] for card in await self.roster.members(feed.room)}
        heir = next((f for f in session.facilitators[1:] if f in present), None)
        if heir is None:
            return
        async with self.turn(feed.room, feed):
            if feed.live.active is session and session.lead not in present and session.lead != heir:
                await self.commit(feed, HEARTH, {"action": "lead", "user": heir, "reason": "dropped"})

    async def _welcome(self) -> None:
        """Members let in from the lobby join the room's presence like any arrival."""
        while True:
            conn, room = await self._admitted.get()
            if room in conn.rooms and conn.user is not None and not conn.closing:
                try:
                    if self.on_admitted is not None:
                        await self.on_admitted(conn, room)
                except Exception:
                    log.exception("admission bookkeeping failed conn=%s", conn.id)

    # The session clocks

    async def _clocks(self) -> None:
        """Every second: count down timed shares, yield the floor when time is up, end sessions
        long past their end. Each change is committed once, whichever worker sees it first."""
        while True:
            await asyncio.sleep(TICK)
            for feed in list(self.fanout.feeds.values()):
                session = feed.live.active
                if session is None:
                    continue
                try:
                    await self._tick(feed, session, now_ms())
                except (Unavailable, HearthError) as exc:
                    log.warning("session clock room=%s: %s", feed.room, exc.code)
                except Exception:
                    log.exception("session clock room=%s failed", feed.room)

    async def _tick(self, feed: RoomFeed, session: live.LiveSession, now: int) -> None:
        if session.floor is not None and session.floor_until is not None:
            left = (session.floor_until - now + 999) // 1000
            if left <= 0:
                async with self.turn(feed.room, feed):  # the first worker yields it; the rest see it done
                    current = feed.live.active
                    if current is not None and current.floor_until is not None and current.floor_until <= now:
                        await self.commit(feed, HEARTH, live.plan_time_up(current))
            elif left % 5 == 0 or left <= 10:
                feed.tick({"ev": "floor_time", "room": feed.room, "user": session.floor, "seconds_left": left,
                           "warning": left <= 30})  # fmt: skip
        if parse_ts(session.ends_at) + END_GRACE * 1000 < now:
            async with self.turn(feed.room, feed):
                if feed.live.active is session:
                    await self.commit(feed, HEARTH, {"action": "ended", "reason": "time"})
