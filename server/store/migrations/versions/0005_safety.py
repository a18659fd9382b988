"""The safety queue's cases and the communities' crisis resources.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("community_id", sa.String(32), sa.ForeignKey("communities.id"), nullable=False),
        sa.Column("room_id", sa.String(32), nullable=False),
        sa.Column("category", sa.String(16), nullable=True),
        sa.Column("seq", sa.BigInteger, nullable=True),
        sa.Column("member", sa.Text, nullable=False),
        sa.Column("raised_by", sa.String(32), nullable=True),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("snapshot", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("steps", sa.Text, nullable=False),
        sa.Column("opened_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_cases_community_id_opened_at", "cases", ["community_id", "opened_at"])
    op.create_table(
        "crisis_resources",
        sa.Column("community_id", sa.String(32), sa.ForeignKey("communities.id"), nullable=False),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("resources", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("community_id", "locale", name="pk_crisis_resources"),
    )


def downgrade() -> None:
    op.drop_table("crisis_resources")
    op.drop_index("ix_cases_community_id_opened_at", table_name="cases")
    op.drop_table("cases")
