"""SqlSchedule: scheduled sessions, their exceptions and registrations, on the same Engines.

Every write that depends on what is already there (a registration against the capacity, a
cancellation, a move, a change of capacity) runs in one transaction that first locks the
session's row (SELECT … FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE serialises
writers), so capacity holds however many workers take registrations at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from rooms.errors import Conflict, NotFound
from rooms.model import RoomId, UserId
from rooms.schedule import LOCAL_FORMAT, Change, Occurrence, Session, SessionId, check_window, keys_near, to_utc
from rooms.schedule_rules import check_changeable, check_move, check_reach, check_registrable
from server.store.directory import new_id
from server.store.engine import Engines
from server.store.sql import from_us, guarded, now_us
from server.store.tables import registrations, session_exceptions, session_facilitators, sessions

REGISTERED = "registered"
WAITLISTED = "waitlisted"


@dataclass(frozen=True, slots=True)
class Registration:
    """One user's place for one occurrence; `position` counts from 1 on the waitlist."""

    status: str
    position: int | None = None


@dataclass(frozen=True, slots=True)
class Attendance:
    """Counts for one occurrence, and where the asking user stands."""

    registered: int = 0
    waitlisted: int = 0
    mine: str | None = None


def to_us(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _session(row: Any, facilitators: Sequence[UserId]) -> Session:
    return Session(
        id=SessionId(row.id),
        room=RoomId(row.room_id),
        title=row.title,
        start=datetime.strptime(row.local_start, LOCAL_FORMAT),
        tz=row.tz,
        duration_minutes=row.duration_minutes,
        facilitators=tuple(facilitators),
        description=row.description,
        rrule=row.rrule,
        capacity=row.capacity,
        lobby_minutes=row.lobby_minutes,
        reminder_minutes=row.reminder_minutes,
        auto_admit=bool(row.auto_admit),
        agreement=row.agreement,
    )


def _change(row: Any) -> Change:
    moved = datetime.strptime(row.moved_start, LOCAL_FORMAT) if row.moved_start else None
    return Change(from_us(row.occurrence), bool(row.cancelled), moved, row.reason)


def _values(session: Session, changes: Iterable[Change] = ()) -> dict[str, Any]:
    first, last = session.span(changes)
    return {
        "title": session.title,
        "description": session.description,
        "local_start": session.start.strftime(LOCAL_FORMAT),
        "tz": session.tz,
        "duration_minutes": session.duration_minutes,
        "rrule": session.rrule,
        "capacity": session.capacity,
        "lobby_minutes": session.lobby_minutes,
        "reminder_minutes": session.reminder_minutes,
        "auto_admit": session.auto_admit,
        "agreement": session.agreement,
        "first_start": to_us(first),
        "last_end": None if last is None else to_us(last),
        "updated_at": now_us(),
    }


class SqlSchedule:
    """Sessions of group rooms and everything hanging off them. Reads use the reader engine."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    # Sessions

    @staticmethod
    def new_id() -> SessionId:
        return SessionId(new_id("s"))

    async def create(self, session: Session, creator: UserId) -> Session:
        """Store a new session; `session.facilitators` (lead first) become its facilitators."""

        async def run() -> None:
            async with self.engines.writer.begin() as conn:
                now = now_us()
                await conn.execute(
                    insert(sessions).values(
                        id=session.id, room_id=session.room, created_by=creator, created_at=now, **_values(session)
                    )
                )
                await self._set_facilitators(conn, session)

        await guarded(run)
        return session

    async def update(self, session: Session) -> Session:
        """Replace a session's fields and facilitators. Registrations and exceptions stay with
        their keys; a larger (or removed) capacity promotes waitlisted people at once."""

        async def run() -> None:
            async with self.engines.writer.begin() as conn:
                old = await self._load(conn, session.id, lock=True)
                if old is None:
                    raise NotFound("There is no such session.")
                changes = await self._changes(conn, [session.id])
                values = _values(session, changes[session.id].values())
                await conn.execute(update(sessions).where(sessions.c.id == session.id).values(**values))
                await conn.execute(delete(session_facilitators).where(session_facilitators.c.session_id == session.id))
                await self._set_facilitators(conn, session)
                if session.capacity is None or (old.capacity is not None and session.capacity > old.capacity):
                    waiting = await conn.execute(
                        select(registrations.c.occurrence)
                        .where(registrations.c.session_id == session.id, registrations.c.status == WAITLISTED)
                        .distinct()
                    )
                    for key_us in [row.occurrence for row in waiting]:
                        await self._promote(conn, session, key_us)

        await guarded(run)
        return session

    async def get(self, session_id: SessionId) -> Session | None:
        async def run() -> Session | None:
            async with self.engines.reader.connect() as conn:
                return await self._load(conn, session_id)

        return await guarded(run)

    async def list_room(self, room: RoomId) -> list[Session]:
        """A room's sessions, oldest first."""

        async def run() -> list[Session]:
            async with self.engines.reader.connect() as conn:
                query = select(sessions).where(sessions.c.room_id == room).order_by(sessions.c.created_at)
                return await self._sessions(conn, list(await conn.execute(query)))

        return await guarded(run)

    # Occurrences

    async def occurrences(self, session: Session, start: datetime, end: datetime) -> list[Occurrence]:
        """`session`'s occurrences starting in [start, end), cancelled ones flagged."""
        check_window(start, end)

        async def run() -> dict[datetime, Change]:
            async with self.engines.reader.connect() as conn:
                return (await self._changes(conn, [session.id], near=keys_near(start, end)))[session.id]

        return session.occurrences(start, end, await guarded(run))

    async def occurrence(self, session_id: SessionId, key: datetime) -> Occurrence | None:
        """The occurrence named `key` (its original start, UTC), or None."""

        async def run() -> Occurrence | None:
            async with self.engines.reader.connect() as conn:
                session = await self._load(conn, session_id)
                if session is None:
                    return None
                return session.occurrence(key, (await self._changes(conn, [session_id]))[session_id])

        return await guarded(run)

    async def occurrences_between(self, start: datetime, end: datetime) -> list[Occurrence]:
        """Every room's occurrences starting in [start, end) (at most 366 days), by start.

        Cancelled ones are included (flagged): a scheduler skips them itself.
        """
        check_window(start, end)

        async def run() -> list[Occurrence]:
            async with self.engines.reader.connect() as conn:
                query = select(sessions).where(
                    sessions.c.first_start < to_us(end),
                    or_(sessions.c.last_end.is_(None), sessions.c.last_end > to_us(start)),
                )
                found = await self._sessions(conn, list(await conn.execute(query)))
                changes = await self._changes(conn, [s.id for s in found], near=keys_near(start, end))
                return [o for s in found for o in s.occurrences(start, end, changes[s.id])]

        return sorted(await guarded(run), key=lambda o: (o.start, o.session, o.key))

    async def change(
        self,
        session_id: SessionId,
        key: datetime,
        actor: UserId,
        *,
        cancel: bool = False,
        moved_to: datetime | None = None,
        reason: str | None = None,
    ) -> Occurrence:
        """Cancel an occurrence (again is a no-op) or move it to `moved_to` (naive local time)."""

        async def run() -> Occurrence:
            async with self.engines.writer.begin() as conn:
                session, occurrence, changes = await self._locked_occurrence(conn, session_id, key)
                now = from_us(now_us())
                check_changeable(occurrence, now)
                check_reach(occurrence, now)
                current = changes.get(key)
                if cancel and occurrence.cancelled:
                    return occurrence
                if moved_to is not None and occurrence.cancelled:
                    raise Conflict("This session was cancelled; it cannot be moved.")
                if moved_to is not None:
                    check_move(key, to_utc(moved_to, session.zone), now)
                change = Change(
                    key,
                    cancelled=cancel,
                    moved_to=moved_to if moved_to is not None else (current.moved_to if current else None),
                    reason=reason if reason is not None else (current.reason if current else None),
                )
                changes[key] = change
                values = {
                    "cancelled": change.cancelled,
                    "moved_start": change.moved_to.strftime(LOCAL_FORMAT) if change.moved_to else None,
                    "reason": change.reason,
                    "changed_by": actor,
                    "changed_at": now_us(),
                }
                where = (session_exceptions.c.session_id == session_id, session_exceptions.c.occurrence == to_us(key))
                if current is None:
                    await conn.execute(
                        insert(session_exceptions).values(session_id=session_id, occurrence=to_us(key), **values)
                    )
                else:
                    await conn.execute(update(session_exceptions).where(*where).values(**values))
                await conn.execute(
                    update(sessions).where(sessions.c.id == session_id).values(**_values(session, changes.values()))
                )
                result = session.occurrence(key, changes)
                assert result is not None
                return result

        return await guarded(run)

    # Registrations

    async def register(self, session_id: SessionId, key: datetime, user: UserId) -> tuple[Registration, bool]:
        """Register `user`, or put them on the waitlist when the occurrence is full.

        Returns their place and whether it is new (a repeat returns the place they hold).
        """

        async def run() -> tuple[Registration, bool]:
            async with self.engines.writer.begin() as conn:
                session, occurrence, _ = await self._locked_occurrence(conn, session_id, key)
                check_registrable(occurrence, from_us(now_us()))
                held = await self._place(conn, session_id, to_us(key), user)
                if held is not None:
                    return held, False
                counts = await self._counts(conn, session_id, [to_us(key)])
                taken = counts.get((to_us(key), REGISTERED), 0)
                waiting = counts.get((to_us(key), WAITLISTED), 0)
                full = session.capacity is not None and (taken >= session.capacity or waiting > 0)
                await conn.execute(
                    insert(registrations).values(
                        session_id=session_id,
                        occurrence=to_us(key),
                        user_id=user,
                        status=WAITLISTED if full else REGISTERED,
                        created_at=now_us(),
                    )
                )
                place = await self._place(conn, session_id, to_us(key), user)
                assert place is not None
                return place, True

        return await guarded(run)

    async def unregister(self, session_id: SessionId, key: datetime, user: UserId) -> None:
        """Give up a place (or a waitlist spot); the first waitlisted takes a freed place."""

        async def run() -> None:
            async with self.engines.writer.begin() as conn:
                session, occurrence, _ = await self._locked_occurrence(conn, session_id, key)
                check_changeable(occurrence, from_us(now_us()))
                await conn.execute(
                    delete(registrations).where(
                        registrations.c.session_id == session_id,
                        registrations.c.occurrence == to_us(key),
                        registrations.c.user_id == user,
                    )
                )
                await self._promote(conn, session, to_us(key))

        await guarded(run)

    async def registered(self, session_id: SessionId, key: datetime) -> list[UserId]:
        """Who holds a place (not the waitlist) for the occurrence `key`, in registration order."""

        async def run() -> list[UserId]:
            async with self.engines.reader.connect() as conn:
                rows = await conn.execute(
                    select(registrations.c.user_id)
                    .where(
                        registrations.c.session_id == session_id,
                        registrations.c.occurrence == to_us(key),
                        registrations.c.status == REGISTERED,
                    )
                    .order_by(registrations.c.created_at, registrations.c.user_id)
                )
                return [UserId(row.user_id) for row in rows]

        return await guarded(run)

    async def attendance(
        self, session_id: SessionId, keys: Sequence[datetime], user: UserId
    ) -> dict[datetime, Attendance]:
        """Registered and waitlisted counts per key, and `user`'s own status."""

        async def run() -> dict[datetime, Attendance]:
            found: dict[datetime, Attendance] = {}
            async with self.engines.reader.connect() as conn:
                for chunk in range(0, len(keys), 500):
                    us = [to_us(k) for k in keys[chunk : chunk + 500]]
                    counts = await self._counts(conn, session_id, us)
                    mine = await conn.execute(
                        select(registrations.c.occurrence, registrations.c.status).where(
                            registrations.c.session_id == session_id,
                            registrations.c.occurrence.in_(us),
                            registrations.c.user_id == user,
                        )
                    )
                    statuses = {row.occurrence: row.status for row in mine}
                    for key_us in us:
                        found[from_us(key_us)] = Attendance(
                            counts.get((key_us, REGISTERED), 0),
                            counts.get((key_us, WAITLISTED), 0),
                            statuses.get(key_us),
                        )
            return found

        return await guarded(run)

    async def registrations_of(
        self, user: UserId, start: datetime, end: datetime
    ) -> list[tuple[Session, Occurrence, str]]:
        """The occurrences starting in [start, end) that `user` registered or waitlisted for,
        with their status.

        Only the registrations whose key is near the window are read (`keys_near`), so the
        cost follows the window, not everything the user ever registered for: a row with a
        key in the year 9000, stored before keys were bounded, is never looked at.
        """
        check_window(start, end)
        lo, hi = keys_near(start, end)

        async def run() -> list[tuple[Session, Occurrence, str]]:
            async with self.engines.reader.connect() as conn:
                rows = list(
                    await conn.execute(
                        select(registrations).where(
                            registrations.c.user_id == user,
                            registrations.c.occurrence >= to_us(lo),
                            registrations.c.occurrence < to_us(hi),
                        )
                    )
                )
                ids = sorted({row.session_id for row in rows})
                found = {s.id: s for s in await self._sessions(conn, await self._session_rows(conn, ids))}
                changes = await self._changes(conn, ids, near=(lo, hi))
                result = []
                for row in rows:
                    session = found.get(row.session_id)
                    occurrence = session.occurrence(from_us(row.occurrence), changes[session.id]) if session else None
                    if session is not None and occurrence is not None and start <= occurrence.start < end:
                        result.append((session, occurrence, str(row.status)))
                return result

        return await guarded(run)

    # Inside transactions

    async def _load(self, conn: AsyncConnection, session_id: str, *, lock: bool = False) -> Session | None:
        query = select(sessions).where(sessions.c.id == session_id)
        row = (await conn.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            return None
        return (await self._sessions(conn, [row]))[0]

    async def _locked_occurrence(
        self, conn: AsyncConnection, session_id: SessionId, key: datetime
    ) -> tuple[Session, Occurrence, dict[datetime, Change]]:
        session = await self._load(conn, session_id, lock=True)
        if session is None:
            raise NotFound("There is no such session.")
        changes = (await self._changes(conn, [session_id]))[session_id]
        occurrence = session.occurrence(key, changes)
        if occurrence is None:
            raise NotFound("This session has no occurrence at that time.")
        return session, occurrence, changes

    async def _session_rows(self, conn: AsyncConnection, ids: Sequence[str]) -> list[Any]:
        rows: list[Any] = []
        for chunk in range(0, len(ids), 500):
            rows.extend(await conn.execute(select(sessions).where(sessions.c.id.in_(ids[chunk : chunk + 500]))))
        return rows

    async def _sessions(self, conn: AsyncConnection, rows: Sequence[Any]) -> list[Session]:
        ids = [row.id for row in rows]
        facilitators: dict[str, list[UserId]] = defaultdict(list)
        for chunk in range(0, len(ids), 500):
            found = await conn.execute(
                select(session_facilitators)
                .where(session_facilitators.c.session_id.in_(ids[chunk : chunk + 500]))
                .order_by(session_facilitators.c.position)
            )
            for row in found:
                facilitators[row.session_id].append(UserId(row.user_id))
        return [_session(row, facilitators[row.id]) for row in rows]

    async def _changes(
        self, conn: AsyncConnection, ids: Sequence[str], *, near: tuple[datetime, datetime] | None = None
    ) -> dict[str, dict[datetime, Change]]:
        """The sessions' exceptions; only those with keys in [near) when given."""
        changes: dict[str, dict[datetime, Change]] = {i: {} for i in ids}
        for chunk in range(0, len(ids), 500):
            query = select(session_exceptions).where(session_exceptions.c.session_id.in_(ids[chunk : chunk + 500]))
            if near is not None:
                query = query.where(
                    session_exceptions.c.occurrence >= to_us(near[0]), session_exceptions.c.occurrence < to_us(near[1])
                )
            rows = await conn.execute(query)
            for row in rows:
                change = _change(row)
                changes[row.session_id][change.key] = change
        return changes

    async def _set_facilitators(self, conn: AsyncConnection, session: Session) -> None:
        await conn.execute(
            insert(session_facilitators),
            [{"session_id": session.id, "user_id": u, "position": i} for i, u in enumerate(session.facilitators)],
        )

    async def _counts(
        self, conn: AsyncConnection, session_id: str, keys_us: Sequence[int]
    ) -> dict[tuple[int, str], int]:
        rows = await conn.execute(
            select(registrations.c.occurrence, registrations.c.status, func.count())
            .where(registrations.c.session_id == session_id, registrations.c.occurrence.in_(keys_us))
            .group_by(registrations.c.occurrence, registrations.c.status)
        )
        return {(row[0], row[1]): row[2] for row in rows}

    async def _place(self, conn: AsyncConnection, session_id: str, key_us: int, user: UserId) -> Registration | None:
        mine = (
            await conn.execute(
                select(registrations).where(
                    registrations.c.session_id == session_id,
                    registrations.c.occurrence == key_us,
                    registrations.c.user_id == user,
                )
            )
        ).first()
        if mine is None:
            return None
        if mine.status == REGISTERED:
            return Registration(REGISTERED)
        ahead = await conn.execute(
            select(func.count()).where(
                registrations.c.session_id == session_id,
                registrations.c.occurrence == key_us,
                registrations.c.status == WAITLISTED,
                or_(
                    registrations.c.created_at < mine.created_at,
                    and_(registrations.c.created_at == mine.created_at, registrations.c.user_id <= user),
                ),
            )
        )
        return Registration(WAITLISTED, int(ahead.scalar_one()))

    async def _promote(self, conn: AsyncConnection, session: Session, key_us: int) -> None:
        """Move the first waitlisted into the places that are free, in waitlist order."""
        where = (registrations.c.session_id == session.id, registrations.c.occurrence == key_us)
        if session.capacity is None:
            free = None
        else:
            counts = await self._counts(conn, session.id, [key_us])
            free = session.capacity - counts.get((key_us, REGISTERED), 0)
            if free <= 0:
                return
        first = await conn.execute(
            select(registrations.c.user_id)
            .where(*where, registrations.c.status == WAITLISTED)
            .order_by(registrations.c.created_at, registrations.c.user_id)
            .limit(free)
        )
        users = [row.user_id for row in first]
        if users:
            await conn.execute(
                update(registrations).where(*where, registrations.c.user_id.in_(users)).values(status=REGISTERED)
            )
