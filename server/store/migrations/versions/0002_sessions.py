"""Scheduled sessions: sessions, their facilitators, exceptions (cancel, move) and registrations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("room_id", sa.String(32), nullable=False),
        sa.Column("title", sa.String(120), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("local_start", sa.String(16), nullable=False),
        sa.Column("tz", sa.String(64), nullable=False),
        sa.Column("duration_minutes", sa.Integer, nullable=False),
        sa.Column("rrule", sa.String(255), nullable=True),
        sa.Column("capacity", sa.Integer, nullable=True),
        sa.Column("lobby_minutes", sa.Integer, nullable=False),
        sa.Column("reminder_minutes", sa.Integer, nullable=False),
        sa.Column("auto_admit", sa.Boolean, nullable=False),
        sa.Column("agreement", sa.Text, nullable=False),
        sa.Column("first_start", sa.BigInteger, nullable=False),
        sa.Column("last_end", sa.BigInteger, nullable=True),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sessions"),
        sa.ForeignKeyConstraint(["room_id"], ["rooms.id"], name="fk_sessions_room_id_rooms"),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name="fk_sessions_created_by_users"),
    )
    op.create_index("ix_sessions_room_id", "sessions", ["room_id"])
    op.create_index("ix_sessions_first_start", "sessions", ["first_start"])
    op.create_table(
        "session_facilitators",
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("session_id", "user_id", name="pk_session_facilitators"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="fk_session_facilitators_session_id_sessions"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_session_facilitators_user_id_users"),
    )
    op.create_table(
        "session_exceptions",
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("occurrence", sa.BigInteger, nullable=False),
        sa.Column("cancelled", sa.Boolean, nullable=False),
        sa.Column("moved_start", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("changed_by", sa.String(32), nullable=False),
        sa.Column("changed_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("session_id", "occurrence", name="pk_session_exceptions"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="fk_session_exceptions_session_id_sessions"),
        sa.ForeignKeyConstraint(["changed_by"], ["users.id"], name="fk_session_exceptions_changed_by_users"),
    )
    op.create_table(
        "registrations",
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("occurrence", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("session_id", "occurrence", "user_id", name="pk_registrations"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], name="fk_registrations_session_id_sessions"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_registrations_user_id_users"),
    )
    op.create_index("ix_registrations_user_id", "registrations", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_registrations_user_id", table_name="registrations")
    op.drop_table("registrations")
    op.drop_table("session_exceptions")
    op.drop_table("session_facilitators")
    op.drop_index("ix_sessions_first_start", table_name="sessions")
    op.drop_index("ix_sessions_room_id", table_name="sessions")
    op.drop_table("sessions")
