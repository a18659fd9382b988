"""SqlTranscriptStore: durable room events with per-room seq, on SQLite or PostgreSQL: the
reads here, the commit path in server/store/commit.py."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from rooms.errors import HearthError, Unavailable
from rooms.model import Event, NewEvent, RoomId, Seq
from rooms.ports import TranscriptStore
from server.store.commit import append_at_once, append_locked, append_sqlite, repeated_key, row_event
from server.store.engine import Engines
from server.store.tables import events, rooms

log = logging.getLogger("hearth.store")
T = TypeVar("T")

_DOWN = (OperationalError, InterfaceError, OSError, TimeoutError, ConnectionError)


async def guarded(call: Callable[[], Awaitable[T]]) -> T:
    """Run a store call; a connection failure becomes `Unavailable` (nothing was committed)."""
    try:
        return await call()
    except _DOWN as exc:
        log.warning("store unavailable: %s", type(exc).__name__)
        raise Unavailable("The message store is unavailable. Please retry.") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable("The message store is unavailable. Please retry.") from exc
        raise


class SqlTranscriptStore:
    """The transcript store on SQLAlchemy Core, and on sqlite3 itself for SQLite's commits.

    `append` takes each room's counter under its row lock (SELECT ... FOR UPDATE on
    PostgreSQL; SQLite's BEGIN IMMEDIATE serialises writers), so commits within a room
    happen in seq order whatever the worker.
    """

    def __init__(self, engines: Engines) -> None:
        self.engines = engines
        # PostgreSQL: the writer's connections, each statement committing by itself
        self._autocommit = engines.writer.execution_options(isolation_level="AUTOCOMMIT")

    async def append(self, batch: Sequence[NewEvent]) -> list[Event | HearthError]:
        if self.engines.sqlite is not None:
            try:
                try:
                    return await self.engines.sqlite.transaction(partial(append_sqlite, batch, False))
                except sqlite3.IntegrityError as exc:
                    if not repeated_key(exc):
                        raise
                    # A key of the batch is stored already (a resend): again, looking keys up first.
                    return await self.engines.sqlite.transaction(partial(append_sqlite, batch, True))
            except sqlite3.OperationalError as exc:  # locked past busy_timeout, I/O error, disk full
                log.warning("store unavailable: %s", type(exc).__name__)
                raise Unavailable("The message store is unavailable. Please retry.") from exc

        async def run() -> list[Event | HearthError]:
            try:
                if all(new.target is None for new in batch):
                    async with self._autocommit.connect() as conn:
                        return await append_at_once(conn, batch)
                async with self.engines.writer.begin() as conn:
                    return await append_locked(conn, batch, probe=False)
            except IntegrityError as exc:
                if not repeated_key(exc):
                    raise
                # A key of the batch is stored already (a resend): again, looking keys up first.
                async with self.engines.writer.begin() as conn:
                    return await append_locked(conn, batch, probe=True)

        return await guarded(run)

    async def _read(self, query: Any) -> list[Event]:
        async def run() -> list[Event]:
            async with self.engines.reader.connect() as conn:
                return [row_event(row) for row in await conn.execute(query)]

        return await guarded(run)

    async def read_since(self, room: RoomId, after: Seq, limit: int) -> list[Event]:
        query = select(events).where(events.c.room_id == room, events.c.seq > after)
        return await self._read(query.order_by(events.c.seq).limit(limit))

    async def read_before(self, room: RoomId, before: Seq | None, limit: int) -> list[Event]:
        query = select(events).where(events.c.room_id == room)
        if before is not None:
            query = query.where(events.c.seq < before)
        found = await self._read(query.order_by(events.c.seq.desc()).limit(limit))
        found.reverse()
        return found

    async def read_session(self, room: RoomId, upto: Seq) -> list[Event]:
        """The session events of the room's latest session, from its opening up to `upto`:
        what a worker folds to know the live state when it starts serving the room."""
        opened = (
            select(func.max(events.c.seq))
            .where(events.c.room_id == room, events.c.kind == "session", events.c.body.like('{"action":"opened"%'))
            .scalar_subquery()
        )
        query = select(events).where(
            events.c.room_id == room, events.c.kind == "session", events.c.seq >= opened, events.c.seq <= upto
        )
        return await self._read(query.order_by(events.c.seq))

    async def read_event(self, room: RoomId, seq: Seq) -> Event | None:
        found = await self._read(select(events).where(events.c.room_id == room, events.c.seq == seq))
        return found[0] if found else None

    async def last_seq(self, room: RoomId) -> Seq:
        async def run() -> Seq:
            async with self.engines.reader.connect() as conn:
                value = await conn.scalar(select(rooms.c.last_seq).where(rooms.c.id == room))
                return Seq(value or 0)

        return await guarded(run)

    async def last_seqs(self, rooms_: list[RoomId]) -> dict[RoomId, Seq]:
        """The latest seq of each room, in one query."""
        if not rooms_:
            return {}

        async def run() -> dict[RoomId, Seq]:
            async with self.engines.reader.connect() as conn:
                rows = await conn.execute(select(rooms.c.id, rooms.c.last_seq).where(rooms.c.id.in_(rooms_)))
                return {RoomId(r.id): Seq(r.last_seq) for r in rows}

        return await guarded(run)

    async def ping(self) -> None:
        """Raise `Unavailable` unless the database answers."""

        async def run() -> None:
            async with self.engines.reader.connect() as conn:
                await conn.scalar(select(1))

        await guarded(run)


_: type[TranscriptStore] = SqlTranscriptStore
