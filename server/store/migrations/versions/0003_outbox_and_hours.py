"""The notification outbox (reminders for an external e-mail or SMS sender) and rooms' open hours.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("occurrence", sa.String(32), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("sent_at", sa.BigInteger, nullable=True),
        sa.UniqueConstraint(
            "kind",
            "user_id",
            "session_id",
            "occurrence",
            name="uq_notification_outbox_kind_user_id_session_id_occurrence",
        ),
    )
    op.create_index("ix_notification_outbox_sent_at", "notification_outbox", ["sent_at"])
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("open_hours", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("open_hours")
    op.drop_index("ix_notification_outbox_sent_at", table_name="notification_outbox")
    op.drop_table("notification_outbox")
