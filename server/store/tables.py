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
    Integer,
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

# A community: a condition-specific group of rooms (rooms/model.py). `join`: open or invite.
communities = Table(
    "communities",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(120), nullable=False),
    Column("join_policy", String(16), nullable=False),
    Column("created_by", String(32), ForeignKey("users.id"), nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

# An account inside a community under a display name; `name_key` (the name case-folded) is
# unique in the community, and so is the account.
members = Table(
    "members",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("community_id", String(32), ForeignKey("communities.id"), nullable=False),
    Column("user_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("display_name", String(120), nullable=False),
    Column("name_key", String(200), nullable=False),
    Column("joined_at", BigInteger, nullable=False),
    UniqueConstraint("community_id", "user_id"),
    UniqueConstraint("community_id", "name_key"),
    Index("ix_members_user_id", "user_id"),
)

# Accounts banned from a community (not names: every member card of the account is out).
bans = Table(
    "bans",
    metadata,
    Column("community_id", String(32), ForeignKey("communities.id"), nullable=False),
    Column("user_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("banned_by", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("community_id", "user_id"),
)

# Accounts muted in every room of a community until `until` (microseconds since the epoch).
mutes = Table(
    "mutes",
    metadata,
    Column("community_id", String(32), ForeignKey("communities.id"), nullable=False),
    Column("user_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("until", BigInteger, nullable=False),
    Column("muted_by", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("community_id", "user_id"),
)

# Versions of a group agreement. `scope` is "" for the community's own, or a room's id for a
# room's agreement on top of it; the current version is the highest.
agreements = Table(
    "agreements",
    metadata,
    Column("community_id", String(32), ForeignKey("communities.id"), nullable=False),
    Column("scope", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("created_by", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("community_id", "scope", "version"),
)

# Who accepted which version of which agreement, and when.
acceptances = Table(
    "acceptances",
    metadata,
    Column("member_id", String(32), ForeignKey("members.id"), nullable=False),
    Column("scope", String(32), nullable=False),
    Column("version", Integer, nullable=False),
    Column("accepted_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("member_id", "scope", "version"),
)

# Append-only: no code path updates or deletes a row (on PostgreSQL a trigger refuses both).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(32), nullable=False),
    Column("action", String(32), nullable=False),
    Column("community_id", String(32), nullable=True),
    Column("room_id", String(32), nullable=True),
    Column("target", String(32), nullable=True),
    Column("reason", Text, nullable=True),
    Index("ix_audit_log_community_id_id", "community_id", "id"),
)

# The safety queue (rooms/safety/cases.py). `member` is the card of whom a case is about, as
# it was (JSON); `steps` who acknowledged and resolved it, when, with what note (JSON).
cases = Table(
    "cases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("community_id", String(32), ForeignKey("communities.id"), nullable=False),
    Column("room_id", String(32), nullable=False),
    Column("category", String(16), nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column("member", Text, nullable=False),
    Column("raised_by", String(32), nullable=True),
    Column("note", Text, nullable=True),
    Column("snapshot", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("steps", Text, nullable=False),
    Column("opened_at", BigInteger, nullable=False),
    Index("ix_cases_community_id_opened_at", "community_id", "opened_at"),
)

# A community's crisis resources per locale: a JSON list of {title, text, phone?, url?}.
crisis_resources = Table(
    "crisis_resources",
    metadata,
    Column("community_id", String(32), ForeignKey("communities.id"), nullable=False),
    Column("locale", String(16), nullable=False),
    Column("resources", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("community_id", "locale"),
)

rooms = Table(
    "rooms",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(120), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("community_id", String(32), ForeignKey("communities.id"), nullable=False),
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("created_by", String(32), ForeignKey("users.id"), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("open_hours", Text, nullable=True),  # JSON: {"tz", "days", "from", "to"}; null: always open
    Column("slow_mode", Integer, nullable=False, server_default="0"),  # seconds between a member's messages
    Column("suspended_notice", Text, nullable=True),  # not null: suspended, with this notice
    Index("ix_rooms_community_id", "community_id"),
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
    Column("sender_id", String(32), nullable=False),  # a member id (m_…), or "hearth"
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

# Scheduled sessions of group rooms (rooms/schedule.py). The start is local wall-clock time
# ("YYYY-MM-DDTHH:MM") in the zone `tz`; `first_start` and `last_end` (UTC microseconds; NULL
# when the rule never ends) bound every occurrence, moves included, for the scheduler's scan.
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("room_id", String(32), ForeignKey("rooms.id"), nullable=False),
    Column("title", String(120), nullable=False),
    Column("description", Text, nullable=False),
    Column("local_start", String(16), nullable=False),
    Column("tz", String(64), nullable=False),
    Column("duration_minutes", Integer, nullable=False),
    Column("rrule", String(255), nullable=True),
    Column("capacity", Integer, nullable=True),
    Column("lobby_minutes", Integer, nullable=False),
    Column("reminder_minutes", Integer, nullable=False),
    Column("auto_admit", Boolean, nullable=False),
    Column("agreement", Text, nullable=False),
    Column("first_start", BigInteger, nullable=False),
    Column("last_end", BigInteger, nullable=True),
    Column("created_by", String(32), ForeignKey("users.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_sessions_room_id", "room_id"),
    Index("ix_sessions_first_start", "first_start"),
)

# The lead facilitator has position 0; co-facilitators follow in the order given.
session_facilitators = Table(
    "session_facilitators",
    metadata,
    Column("session_id", String(32), ForeignKey("sessions.id"), nullable=False),
    Column("user_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("position", Integer, nullable=False),
    PrimaryKeyConstraint("session_id", "user_id"),
)

# One row per changed occurrence, named by its key: its original start (UTC microseconds).
session_exceptions = Table(
    "session_exceptions",
    metadata,
    Column("session_id", String(32), ForeignKey("sessions.id"), nullable=False),
    Column("occurrence", BigInteger, nullable=False),
    Column("cancelled", Boolean, nullable=False),
    Column("moved_start", String(16), nullable=True),
    Column("reason", Text, nullable=True),
    Column("changed_by", String(32), ForeignKey("users.id"), nullable=False),
    Column("changed_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("session_id", "occurrence"),
)

# RSVPs per occurrence; `status` is registered or waitlisted, and the waitlist is served in
# (created_at, user_id) order.
registrations = Table(
    "registrations",
    metadata,
    Column("session_id", String(32), ForeignKey("sessions.id"), nullable=False),
    Column("occurrence", BigInteger, nullable=False),
    Column("user_id", String(32), ForeignKey("users.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("session_id", "occurrence", "user_id"),
    Index("ix_registrations_user_id", "user_id"),
)

# Notices for an external e-mail or SMS sender (server/store/outbox.py); once-only by key.
notification_outbox = Table(
    "notification_outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("user_id", String(32), nullable=False),
    Column("session_id", String(32), nullable=False),
    Column("occurrence", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("sent_at", BigInteger, nullable=True),
    UniqueConstraint(
        "kind", "user_id", "session_id", "occurrence", name="uq_notification_outbox_kind_user_session_occurrence"
    ),
    Index("ix_notification_outbox_sent_at", "sent_at"),
)
