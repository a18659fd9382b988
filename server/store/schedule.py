"""SqlSchedule: scheduled sessions, their exceptions and the places taken in them, on the same
Engines. It reads and writes rows and turns them into the domain's values (occurrences by
`Session.occurrences`); it decides nothing (see `rooms.ports.ScheduleStore`).

The rules that depend on what is stored (capacity, the waitlist, cancellations and moves)
run inside `session_locked`: a transaction that first locks the session's row (SELECT … FOR
UPDATE on PostgreSQL; on SQLite the writer's BEGIN IMMEDIATE serialises every writer), so
what they read still holds when their writes commit, however many workers take
registrations at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from typing import Any, NoReturn

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from rooms.clock import from_us, now_us, to_us
from rooms.fields import is_id
from rooms.model import RoomId, UserId
from rooms.ports import ScheduleStore
from rooms.schedule import LOCAL_FORMAT, Change, Occurrence, Session, SessionId, keys_near
from rooms.schedule_rules import REGISTERED, WAITLISTED, Attendance, Place, Status
from server.store.directory import new_id
from server.store.engine import Engines
from server.store.sql import guarded
from server.store.tables import registrations, session_exceptions, session_facilitators, sessions

CHUNK = 500  # ids or keys per IN (…): well inside every driver's limit on bound parameters


def _status(value: str) -> Status:
    return REGISTERED if value == REGISTERED else WAITLISTED


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
    """A session's row. `first_start` and `last_end` bound every occurrence, moves included,
    for `occurrences_between`'s scan."""
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


async def _raise(exc: Exception) -> NoReturn:
    raise exc


class SqlSchedule:
    """Sessions of group rooms and everything hanging off them. Reads use the reader engine."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    # Sessions

    @staticmethod
    def new_id() -> SessionId:
        return SessionId(new_id("s"))

    async def create(self, session: Session, creator: UserId) -> None:
        async def run() -> None:
            async with self.engines.writer.begin() as conn:
                await conn.execute(
                    insert(sessions).values(
                        id=session.id, room_id=session.room, created_by=creator, created_at=now_us(), **_values(session)
                    )
                )
                await _set_facilitators(conn, session)

        await guarded(run)

    async def get(self, session_id: SessionId) -> Session | None:
        if not is_id(session_id):
            return None

        async def run() -> Session | None:
            async with self.engines.reader.connect() as conn:
                return await _load(conn, session_id)

        return await guarded(run)

    async def list_room(self, room: RoomId) -> list[Session]:
        async def run() -> list[Session]:
            async with self.engines.reader.connect() as conn:
                query = select(sessions).where(sessions.c.room_id == room).order_by(sessions.c.created_at)
                return await _sessions(conn, list(await conn.execute(query)))

        return await guarded(run)

    # Occurrences

    async def occurrences(self, session: Session, start: datetime, end: datetime) -> list[Occurrence]:
        async def run() -> dict[datetime, Change]:
            async with self.engines.reader.connect() as conn:
                return (await _changes(conn, [session.id], near=keys_near(start, end)))[session.id]

        return session.occurrences(start, end, await guarded(run))

    async def occurrence(self, session_id: SessionId, key: datetime) -> Occurrence | None:
        """The occurrence named `key` (its original start, UTC), or None."""

        async def run() -> Occurrence | None:
            async with self.engines.reader.connect() as conn:
                session = await _load(conn, session_id)
                if session is None:
                    return None
                return session.occurrence(key, (await _changes(conn, [session_id]))[session_id])

        return await guarded(run)

    async def occurrences_between(self, start: datetime, end: datetime) -> list[Occurrence]:
        async def run() -> list[Occurrence]:
            async with self.engines.reader.connect() as conn:
                query = select(sessions).where(
                    sessions.c.first_start < to_us(end),
                    or_(sessions.c.last_end.is_(None), sessions.c.last_end > to_us(start)),
                )
                found = await _sessions(conn, list(await conn.execute(query)))
                changes = await _changes(conn, [s.id for s in found], near=keys_near(start, end))
                return [o for s in found for o in s.occurrences(start, end, changes[s.id])]

        return sorted(await guarded(run), key=lambda o: (o.start, o.session, o.key))

    # Places

    async def registered(self, session_id: SessionId, key: datetime) -> list[UserId]:
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
        async def run() -> dict[datetime, Attendance]:
            found: dict[datetime, Attendance] = {}
            async with self.engines.reader.connect() as conn:
                for chunk in range(0, len(keys), CHUNK):
                    us = [to_us(k) for k in keys[chunk : chunk + CHUNK]]
                    counts = await conn.execute(
                        select(registrations.c.occurrence, registrations.c.status, func.count())
                        .where(registrations.c.session_id == session_id, registrations.c.occurrence.in_(us))
                        .group_by(registrations.c.occurrence, registrations.c.status)
                    )
                    count = {(row[0], row[1]): row[2] for row in counts}
                    mine = await conn.execute(
                        select(registrations.c.occurrence, registrations.c.status).where(
                            registrations.c.session_id == session_id,
                            registrations.c.occurrence.in_(us),
                            registrations.c.user_id == user,
                        )
                    )
                    statuses = {row.occurrence: _status(row.status) for row in mine}
                    for key_us in us:
                        found[from_us(key_us)] = Attendance(
                            count.get((key_us, REGISTERED), 0), count.get((key_us, WAITLISTED), 0), statuses.get(key_us)
                        )
            return found

        return await guarded(run)

    async def registrations_of(
        self, user: UserId, start: datetime, end: datetime
    ) -> list[tuple[Session, Occurrence, Status]]:
        """Only the places whose key is near the window are read (`keys_near`): a row with a
        key in the year 9000, stored before keys were bounded, is never looked at."""
        lo, hi = keys_near(start, end)

        async def run() -> list[tuple[Session, Occurrence, Status]]:
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
                found = {s.id: s for s in await _sessions(conn, await _session_rows(conn, ids))}
                changes = await _changes(conn, ids, near=(lo, hi))
                result = []
                for row in rows:
                    session = found.get(row.session_id)
                    occurrence = session.occurrence(from_us(row.occurrence), changes[session.id]) if session else None
                    if session is not None and occurrence is not None and start <= occurrence.start < end:
                        result.append((session, occurrence, _status(row.status)))
                return result

        return await guarded(run)

    # Writes that depend on what is stored

    @asynccontextmanager
    async def session_locked(self, session_id: SessionId) -> AsyncIterator[SqlLockedSession]:
        try:
            async with self.engines.writer.begin() as conn:
                session = await _load(conn, session_id, lock=True)
                changes = (await _changes(conn, [session_id]))[session_id] if session is not None else {}
                yield SqlLockedSession(conn, session, changes)
        except Exception as exc:
            await guarded(partial(_raise, exc))  # a lost connection is Unavailable, as for every call


class SqlLockedSession:
    """A `LockedSession` on a writer transaction that holds the session's row lock."""

    def __init__(self, conn: AsyncConnection, session: Session | None, changes: dict[datetime, Change]) -> None:
        self._conn = conn
        self._session = session
        self._changes = changes

    @property
    def session(self) -> Session | None:
        return self._session

    @property
    def changes(self) -> dict[datetime, Change]:
        return self._changes

    def _id(self) -> SessionId:
        assert self._session is not None, "no such session: nothing to read or write"
        return self._session.id

    def _where(self, key: datetime) -> tuple[Any, ...]:
        return registrations.c.session_id == self._id(), registrations.c.occurrence == to_us(key)

    async def places(self, key: datetime) -> list[Place]:
        return await _places(self._conn, self._id(), key)

    async def waitlisted(self) -> list[datetime]:
        rows = await self._conn.execute(
            select(registrations.c.occurrence)
            .where(registrations.c.session_id == self._id(), registrations.c.status == WAITLISTED)
            .distinct()
        )
        return [from_us(row.occurrence) for row in rows]

    async def add_place(self, key: datetime, user: UserId, status: Status) -> None:
        await self._conn.execute(
            insert(registrations).values(
                session_id=self._id(), occurrence=to_us(key), user_id=user, status=status, created_at=now_us()
            )
        )

    async def remove_place(self, key: datetime, user: UserId) -> None:
        await self._conn.execute(delete(registrations).where(*self._where(key), registrations.c.user_id == user))

    async def promote(self, key: datetime, users: Sequence[UserId]) -> None:
        for chunk in range(0, len(users), CHUNK):
            await self._conn.execute(
                update(registrations)
                .where(*self._where(key), registrations.c.user_id.in_(users[chunk : chunk + CHUNK]))
                .values(status=REGISTERED)
            )

    async def save(self, session: Session) -> None:
        values = _values(session, self._changes.values())
        await self._conn.execute(update(sessions).where(sessions.c.id == self._id()).values(**values))
        await self._conn.execute(delete(session_facilitators).where(session_facilitators.c.session_id == session.id))
        await _set_facilitators(self._conn, session)
        self._session = session

    async def save_change(self, change: Change, actor: UserId) -> None:
        session_id, key_us = self._id(), to_us(change.key)
        values = {
            "cancelled": change.cancelled,
            "moved_start": change.moved_to.strftime(LOCAL_FORMAT) if change.moved_to else None,
            "reason": change.reason,
            "changed_by": actor,
            "changed_at": now_us(),
        }
        if change.key in self._changes:
            await self._conn.execute(
                update(session_exceptions)
                .where(session_exceptions.c.session_id == session_id, session_exceptions.c.occurrence == key_us)
                .values(**values)
            )
        else:
            await self._conn.execute(
                insert(session_exceptions).values(session_id=session_id, occurrence=key_us, **values)
            )
        self._changes[change.key] = change
        assert self._session is not None
        await self._conn.execute(
            update(sessions).where(sessions.c.id == session_id).values(**_values(self._session, self._changes.values()))
        )


# Reads, on a connection of either engine


async def _load(conn: AsyncConnection, session_id: str, *, lock: bool = False) -> Session | None:
    query = select(sessions).where(sessions.c.id == session_id)
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    if row is None:
        return None
    return (await _sessions(conn, [row]))[0]


async def _session_rows(conn: AsyncConnection, ids: Sequence[str]) -> list[Any]:
    rows: list[Any] = []
    for chunk in range(0, len(ids), CHUNK):
        rows.extend(await conn.execute(select(sessions).where(sessions.c.id.in_(ids[chunk : chunk + CHUNK]))))
    return rows


async def _sessions(conn: AsyncConnection, rows: Sequence[Any]) -> list[Session]:
    ids = [row.id for row in rows]
    facilitators: dict[str, list[UserId]] = defaultdict(list)
    for chunk in range(0, len(ids), CHUNK):
        found = await conn.execute(
            select(session_facilitators)
            .where(session_facilitators.c.session_id.in_(ids[chunk : chunk + CHUNK]))
            .order_by(session_facilitators.c.position)
        )
        for row in found:
            facilitators[row.session_id].append(UserId(row.user_id))
    return [_session(row, facilitators[row.id]) for row in rows]


async def _changes(
    conn: AsyncConnection, ids: Sequence[str], *, near: tuple[datetime, datetime] | None = None
) -> dict[str, dict[datetime, Change]]:
    """The sessions' exceptions; only those with keys in [near) when given."""
    changes: dict[str, dict[datetime, Change]] = {i: {} for i in ids}
    for chunk in range(0, len(ids), CHUNK):
        query = select(session_exceptions).where(session_exceptions.c.session_id.in_(ids[chunk : chunk + CHUNK]))
        if near is not None:
            query = query.where(
                session_exceptions.c.occurrence >= to_us(near[0]), session_exceptions.c.occurrence < to_us(near[1])
            )
        for row in await conn.execute(query):
            change = _change(row)
            changes[row.session_id][change.key] = change
    return changes


async def _places(conn: AsyncConnection, session_id: str, key: datetime) -> list[Place]:
    """An occurrence's places in the order they were asked for: by when, then by user id (a
    tie only a clock too coarse to tell two apart makes)."""
    rows = await conn.execute(
        select(registrations.c.user_id, registrations.c.status)
        .where(registrations.c.session_id == session_id, registrations.c.occurrence == to_us(key))
        .order_by(registrations.c.created_at, registrations.c.user_id)
    )
    return [Place(UserId(row.user_id), _status(row.status)) for row in rows]


async def _set_facilitators(conn: AsyncConnection, session: Session) -> None:
    await conn.execute(
        insert(session_facilitators),
        [{"session_id": session.id, "user_id": u, "position": i} for i, u in enumerate(session.facilitators)],
    )


_: type[ScheduleStore] = SqlSchedule
