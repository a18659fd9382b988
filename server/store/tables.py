"""The schema, in SQLAlchemy Core. Alembic migrations (migrations/versions) create it.

Times are integers: microseconds since the epoch, UTC, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(120), nullable=False),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

rooms = Table(
    "rooms",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(120), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("created_by", String(32), ForeignKey("users.id"), nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

room_members = Table(
    "room_members",
    metadata,
    Column("room_id", String(32), ForeignKey("rooms.id"), nullable=False),
    Column("user_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("role", String(16), nullable=False),
    Column("added_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("room_id", "user_id"),
    Index("ix_room_members_user_id", "user_id"),
)

# One row per durable room event; (room_id, seq) is unique and gap-free per room.
events = Table(
    "events",
    metadata,
    Column("room_id", String(32), ForeignKey("rooms.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("sender_id", String(32), nullable=False),
    Column("sender_name", String(120), nullable=False),
    Column("sender_role", String(16), nullable=False),
    Column("client_id", String(64), nullable=True),
    Column("target", BigInteger, nullable=True),
    Column("ts", BigInteger, nullable=False),
    Column("body", Text, nullable=False),
    Column("redacted", Boolean, nullable=False, server_default=false()),
    PrimaryKeyConstraint("room_id", "seq"),
    UniqueConstraint("room_id", "sender_id", "client_id"),
    Index("ix_events_room_id_target", "room_id", "target"),
)

revoked_tokens = Table(
    "revoked_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)
