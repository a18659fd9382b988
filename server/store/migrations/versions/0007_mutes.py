"""Timed mutes of an account in every room of a community.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mutes",
        sa.Column("community_id", sa.String(32), sa.ForeignKey("communities.id"), nullable=False),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("until", sa.BigInteger, nullable=False),
        sa.Column("muted_by", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("community_id", "user_id", name="pk_mutes"),
    )


def downgrade() -> None:
    op.drop_table("mutes")
