"""Opening the database: SQLite in WAL mode by default, PostgreSQL through asyncpg."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry


@dataclass(frozen=True, slots=True)
class Engines:
    """`writer` for transactions that write, `reader` for reads (each of its statements
    commits by itself: nothing that writes may use it).

    On SQLite the writer starts every transaction with BEGIN IMMEDIATE, so two writers wait
    for each other (busy_timeout) instead of failing when one upgrades a read to a write.
    """

    writer: AsyncEngine
    reader: AsyncEngine

    @property
    def is_sqlite(self) -> bool:
        return self.writer.dialect.name == "sqlite"

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def _quiet_driver_logs() -> None:
    """At DEBUG, aiosqlite logs statements with their parameters and SQLAlchemy logs result
    rows: both would put message text in the logs. INFO is as far down as they go."""
    for name in ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def open_engines(url: str, *, sqlite_synchronous: str = "FULL") -> Engines:
    _quiet_driver_logs()
    if not url.startswith("sqlite"):
        # No pre-ping: it would cost a round trip per checkout, every group commit included.
        # A connection lost with the server fails its statement (`Unavailable`, nothing
        # committed) and SQLAlchemy then discards every pooled connection older than it.
        # Reads run in autocommit: under READ COMMITTED, PostgreSQL's default and what Hearth
        # expects, a transaction gives a read nothing (each statement takes its own snapshot
        # either way; no read relies on a snapshot shared by two statements), and BEGIN and
        # ROLLBACK were two of a one-statement read's three round trips (per read 485-514 ->
        # 233-265 us of wall time, 311-356 -> 175-199 us of CPU).
        reader = create_async_engine(
            url, pool_size=10, max_overflow=10, hide_parameters=True, isolation_level="AUTOCOMMIT"
        )
        # Writes plan each statement for the batch at hand. A prepared statement's generic
        # plan is fixed from the statistics of the moment: planned while `events` was small,
        # the commit's idempotency probe kept scanning the whole table as it grew (13 ms at
        # 60,000 rows, until autovacuum's next ANALYZE) instead of using the unique index
        # (under 1 ms). Planning each time costs about 0.4 ms per commit.
        writer = create_async_engine(
            url,
            pool_size=5,
            max_overflow=5,
            hide_parameters=True,
            connect_args={"server_settings": {"plan_cache_mode": "force_custom_plan"}},
        )
        return Engines(writer, reader)
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    if sqlite_synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError("HEARTH_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA")
    # hide_parameters: message text and password hashes never reach SQL logs or error strings.
    writer = create_async_engine(url, pool_size=2, max_overflow=0, hide_parameters=True)
    # Reads run in autocommit, as on PostgreSQL: each SELECT is its own snapshot (WAL readers
    # never wait for the writer), and no read relies on a snapshot shared by two statements.
    # Every call into aiosqlite is a round trip to its thread and back to the loop; the BEGIN
    # before a read and the ROLLBACK when its connection went back to the pool were two of
    # them (per membership lookup 1.5-1.8 -> 1.1 ms of CPU).
    reader = create_async_engine(
        url,
        pool_size=5,
        max_overflow=5,
        hide_parameters=True,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
    )
    for engine in (writer, reader):
        _sqlite_pragmas(engine, sqlite_synchronous)

    @event.listens_for(writer.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return Engines(writer, reader)


def _sqlite_pragmas(engine: AsyncEngine, synchronous: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        # Take transaction control from the driver so BEGIN is ours to choose.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()
