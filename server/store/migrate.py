"""Applying Alembic migrations from code (`hearth migrate`, and on start in development)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection

from server.store.engine import Engines

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


MIGRATION_LOCK = 0x4845415254  # "HEART": the advisory lock workers take to migrate one at a time


async def upgrade(engines: Engines, revision: str = "head") -> None:
    """Bring the schema to `revision` in one transaction.

    Workers starting together migrate one after the other: on PostgreSQL under an advisory
    lock, on SQLite under the writer's BEGIN IMMEDIATE. The later ones find nothing to do.
    """

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    async with engines.writer.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(run)
