"""Opening the database: SQLite in WAL mode by default, PostgreSQL through asyncpg."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

T = TypeVar("T")
log = logging.getLogger("hearth.store")


class SqliteWriter:
    """One sqlite3 connection on a thread of its own, for write transactions that run there
    whole, as one function: one round trip between the event loop and the thread each.

    Through aiosqlite every call is such a round trip: a statement is three or four (cursor,
    execute, fetch, close), and a commit of one message took 15, about 3 ms of CPU. The
    group commit runs here; other writes, which are rare, go through the `writer` engine.
    BEGIN IMMEDIATE serialises the two (busy_timeout).
    """

    def __init__(self, path: str, pragmas: list[str]) -> None:
        self._path = path
        self._pragmas = pragmas
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hearth-sqlite-writer")
        self._conn: sqlite3.Connection | None = None  # opened on the thread, by its first transaction

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` between BEGIN IMMEDIATE and COMMIT, on the writer's thread;
        rolled back if it raises. Once started it runs to its end, even if the caller is
        cancelled meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._transaction, work)

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            for pragma in self._pragmas:
                conn.execute(pragma)
            self._conn = conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._thread, close)
        self._thread.shutdown()


@dataclass(frozen=True, slots=True)
class Engines:
    """`writer` for transactions that write, `reader` for reads (each of its statements
    commits by itself: nothing that writes may use it).

    On SQLite the writer starts every transaction with BEGIN IMMEDIATE, so two writers wait
    for each other (busy_timeout) instead of failing when one upgrades a read to a write.
    """

    writer: AsyncEngine
    reader: AsyncEngine
    sqlite: SqliteWriter | None = None  # SQLite's commit path (None on PostgreSQL)

    async def dispose(self) -> None:
        if self.sqlite is not None:
            await self.sqlite.close()
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
    path = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
    if not path or path == ":memory:":
        raise ValueError("SQLite needs a file: every connection to :memory: is a database of its own")
    _private_files(Path(path))
    if sqlite_synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError("HEARTH_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA")
    pragmas = [
        "PRAGMA journal_mode=WAL",
        f"PRAGMA synchronous={sqlite_synchronous}",
        "PRAGMA foreign_keys=ON",
        "PRAGMA busy_timeout=10000",
    ]
    # hide_parameters: message text and password hashes never reach SQL logs or error strings.
    writer = create_async_engine(url, pool_size=2, max_overflow=0, hide_parameters=True)
    # Reads run in autocommit, as on PostgreSQL: each SELECT is its own snapshot (WAL readers
    # never wait for the writer), and no read relies on a snapshot shared by two statements.
    # Every call into aiosqlite is a round trip to its thread and back to the loop; the BEGIN
    # before a read and the ROLLBACK when its connection went back to the pool were two of
    # them (a membership lookup, `bench/store.py`: 1.64 -> 1.12 ms of CPU).
    reader = create_async_engine(
        url,
        pool_size=5,
        max_overflow=5,
        hide_parameters=True,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
    )
    for engine in (writer, reader):
        _sqlite_pragmas(engine, pragmas)

    @event.listens_for(writer.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return Engines(writer, reader, SqliteWriter(path, pragmas))


def _private_files(path: Path) -> None:
    """The database's directory 0700 when it is made here, and the database with its -wal and
    -shm files 0600: they hold password hashes and transcripts. SQLite made the database
    0644, and gives -wal and -shm the mode of the database file, so the file is made first,
    empty and 0600 (SQLite takes an empty file for a new database). Files of an older
    install are narrowed to 0600 too."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            os.chmod(file, 0o600)
        except FileNotFoundError:
            pass
        except PermissionError:
            log.warning("cannot make %s readable by its owner only", file)


def _sqlite_pragmas(engine: AsyncEngine, pragmas: list[str]) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
        # Take transaction control from the driver so BEGIN is ours to choose.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()
