"""Rooms' slow mode and suspension.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("slow_mode", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("suspended_notice", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("suspended_notice")
        batch.drop_column("slow_mode")
