"""Communities, members under display names, group agreements, bans and the audit log.

On a database that holds anything, every existing room is put in one community ("General",
open), and every existing account becomes its member under its display name (made unique in
the community with a number where two read the same). Stored events then name members, not
accounts: their senders, and the people named in session events.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

import hashlib
import secrets
import time
import unicodedata
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# On PostgreSQL the audit log refuses UPDATE and DELETE, whoever asks. One statement per
# execute: asyncpg prepares each, and a prepared statement holds one command.
_AUDIT_GUARD = (
    """
CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql
""",
    """
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()
""",
)


def upgrade() -> None:
    op.create_table(
        "communities",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("join_policy", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(32), sa.ForeignKey("users.id"), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "members",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("community_id", sa.String(32), sa.ForeignKey("communities.id"), nullable=False),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("display_name", sa.String(120), nullable=False),
        sa.Column("name_key", sa.String(200), nullable=False),
        sa.Column("joined_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("community_id", "user_id", name="uq_members_community_id_user_id"),
        sa.UniqueConstraint("community_id", "name_key", name="uq_members_community_id_name_key"),
    )
    op.create_index("ix_members_user_id", "members", ["user_id"])
    op.create_table(
        "bans",
        sa.Column("community_id", sa.String(32), sa.ForeignKey("communities.id"), nullable=False),
        sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("banned_by", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("community_id", "user_id", name="pk_bans"),
    )
    op.create_table(
        "agreements",
        sa.Column("community_id", sa.String(32), sa.ForeignKey("communities.id"), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("community_id", "scope", "version", name="pk_agreements"),
    )
    op.create_table(
        "acceptances",
        sa.Column("member_id", sa.String(32), sa.ForeignKey("members.id"), nullable=False),
        sa.Column("scope", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("accepted_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("member_id", "scope", "version", name="pk_acceptances"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("community_id", sa.String(32), nullable=True),
        sa.Column("room_id", sa.String(32), nullable=True),
        sa.Column("target", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
    )
    op.create_index("ix_audit_log_community_id_id", "audit_log", ["community_id", "id"])
    if op.get_bind().dialect.name == "postgresql":
        for statement in _AUDIT_GUARD:
            op.execute(statement)

    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    if sqlite:
        # SQLite could only make the column NOT NULL, or give it its foreign key afterwards,
        # by copying `rooms` to a new table and dropping the old one; and with foreign keys
        # on, that DROP fails once anything refers to a room (events, members, sessions):
        # inside the migration's transaction they cannot be turned off. So the column comes
        # with its reference at once, and stays nullable there: every room made from now on
        # names its community, and every existing one is given one below.
        op.execute("ALTER TABLE rooms ADD COLUMN community_id VARCHAR(32) REFERENCES communities (id)")
    else:
        op.add_column("rooms", sa.Column("community_id", sa.String(32), nullable=True))
    if bind.execute(sa.text("SELECT 1 FROM users UNION SELECT 1 FROM rooms")).first() is not None:
        community = _general_community()
        op.execute(sa.text("UPDATE rooms SET community_id = :c").bindparams(c=community))
        _members_for_accounts(community)
    if not sqlite:
        op.alter_column("rooms", "community_id", existing_type=sa.String(32), nullable=False)
        op.create_foreign_key("fk_rooms_community_id_communities", "rooms", "communities", ["community_id"], ["id"])
    op.create_index("ix_rooms_community_id", "rooms", ["community_id"])


def _general_community() -> str:
    community = f"c_{secrets.token_hex(6)}"
    op.execute(
        sa.text(
            "INSERT INTO communities (id, name, join_policy, created_by, created_at)"
            " VALUES (:id, 'General', 'open', NULL, :at)"
        ).bindparams(id=community, at=int(time.time() * 1_000_000))
    )
    return community


def _members_for_accounts(community: str) -> None:
    """Every account becomes a member of the community under its display name, and stored
    events name those members instead of the accounts."""
    bind = op.get_bind()
    now = int(time.time() * 1_000_000)
    taken: set[str] = set()
    member_of: dict[str, str] = {}
    for user_id, name in bind.execute(sa.text("SELECT id, display_name FROM users ORDER BY created_at, id")):
        shown, n = name, 1
        while _key(shown) in taken:
            n += 1
            shown = f"{name} {n}"
        taken.add(_key(shown))
        member_of[user_id] = member = f"m_{secrets.token_hex(6)}"
        bind.execute(
            sa.text(
                "INSERT INTO members (id, community_id, user_id, display_name, name_key, joined_at)"
                " VALUES (:id, :c, :u, :name, :key, :at)"
            ),
            {"id": member, "c": community, "u": user_id, "name": shown, "key": _key(shown), "at": now},
        )
    # One statement for every sender (not one scan of the events per account).
    bind.execute(
        sa.text(
            "UPDATE events SET sender_id = (SELECT m.id FROM members m WHERE m.user_id = events.sender_id)"
            " WHERE sender_id IN (SELECT user_id FROM members)"
        )
    )
    # Session bodies name people inside JSON: rewritten in batches, never all held at once.
    after: tuple[str, int] = ("", -1)
    while True:
        batch = bind.execute(
            sa.text(
                "SELECT room_id, seq, body FROM events WHERE kind = 'session'"
                " AND (room_id > :r OR (room_id = :r AND seq > :s)) ORDER BY room_id, seq LIMIT 500"
            ),
            {"r": after[0], "s": after[1]},
        ).all()
        if not batch:
            break
        for room_id, seq, body in batch:
            renamed = orjson.dumps(_rename(orjson.loads(body), member_of)).decode()
            if renamed != body:
                bind.execute(
                    sa.text("UPDATE events SET body = :b WHERE room_id = :r AND seq = :s"),
                    {"b": renamed, "r": room_id, "s": seq},
                )
        after = (batch[-1][0], batch[-1][1])


def _rename(value: Any, member_of: dict[str, str]) -> Any:
    if isinstance(value, str):
        return member_of.get(value, value)
    if isinstance(value, list):
        return [_rename(item, member_of) for item in value]
    if isinstance(value, dict):
        return {member_of.get(key, key): _rename(item, member_of) for key, item in value.items()}
    return value


def _key(name: str) -> str:
    """As `rooms.communities.name_key`, frozen here as it was when this migration was written."""
    folded = unicodedata.normalize("NFKC", name).translate(_NO_JOINERS)
    key = unicodedata.normalize("NFKC", " ".join(folded.split()).casefold())
    if len(key) > 200:
        key = "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return key


_NO_JOINERS = str.maketrans("", "", "\u200c\u200d")


def downgrade() -> None:
    raise NotImplementedError("Communities cannot be taken out again: events now name members.")
