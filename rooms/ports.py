"""The interfaces the domain needs; `server/` implements them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from rooms.errors import HearthError
from rooms.model import (
    Community,
    CommunityId,
    Event,
    JoinPolicy,
    Member,
    MemberId,
    MemberRole,
    NewEvent,
    Room,
    RoomId,
    RoomKind,
    Seq,
    User,
    UserId,
)

if TYPE_CHECKING:  # rooms.schedule imports rooms.service, which imports this module
    from rooms.safety.cases import Case, CaseStatus
    from rooms.schedule import Change, Occurrence, Session, SessionId
    from rooms.schedule_rules import Attendance, Place, Status


class Broker(Protocol):
    """Fans committed room events out to every worker. Implementations: MemoryBroker, RedisBroker.

    At most once: a subscriber that sees a gap in a room's seq fills it from the TranscriptStore.
    Publishes to one room from one worker arrive in the order they were made.
    """

    async def publish(self, messages: Sequence[tuple[RoomId, bytes]]) -> None:
        """Hand each (room, event) to every worker subscribed to its room, this one included,
        in one round trip to the backend."""

    def subscribe(self, room: RoomId) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Return once the backend has confirmed the subscription; a publish made after that is seen."""


class TranscriptStore(Protocol):
    """The source of truth for durable room events. Implementation: SqlTranscriptStore."""

    async def append(self, events: Sequence[NewEvent]) -> list[Event | HearthError]:
        """Commit all `events` in one transaction, each with its room's next seq.

        Idempotent on (room, sender, client_id): a repeat returns the stored event. An event
        that cannot be applied (its target is gone) gets its error in place and takes no seq.
        Raises `Unavailable` when the store cannot be reached; then nothing was committed.
        """

    async def read_since(self, room: RoomId, after: Seq, limit: int) -> list[Event]:
        """Up to `limit` events with seq > `after`, oldest first."""

    async def read_before(self, room: RoomId, before: Seq | None, limit: int) -> list[Event]:
        """The `limit` events just before seq `before` (or the latest), oldest first."""

    async def read_session(self, room: RoomId, upto: Seq) -> list[Event]:
        """The events of the room's latest session, from its opening up to seq `upto`."""

    async def read_event(self, room: RoomId, seq: Seq) -> Event | None:
        """One event by seq, as it stands now (edited or redacted)."""

    async def last_seq(self, room: RoomId) -> Seq:
        """The latest committed seq of `room` (0 when it has none)."""

    async def last_seqs(self, rooms: list[RoomId]) -> dict[RoomId, Seq]:
        """The latest committed seq of each of `rooms` that has one, in one read."""

    async def ping(self) -> None:
        """Return once the store answers; `Unavailable` when it does not."""


class Directory(Protocol):
    """Users, rooms and membership. Implementation: SqlDirectory."""

    async def get_user(self, user: UserId) -> User | None: ...

    async def get_room(self, room: RoomId) -> Room | None: ...

    async def member_role(self, room: RoomId, user: UserId) -> MemberRole | None: ...

    async def rooms_for(self, user: User) -> list[Room]:
        """Every room `user` may join: drop-in rooms and the groups they belong to."""

    async def create_room(self, name: str, kind: RoomKind, creator: User, community: CommunityId) -> Room:
        """Create a room; its creator becomes one of its facilitators."""

    async def set_open_hours(self, room: RoomId, hours: Mapping[str, Any] | None) -> None: ...

    async def add_member(self, room: RoomId, user: UserId, role: MemberRole) -> bool:
        """Add or update a membership; False when it already was exactly that."""

    async def set_moderation(self, room: RoomId, slow_mode: int, suspended: str | None) -> None:
        """Set a room's slow mode (seconds; 0: off) and suspension (its notice; None: open)."""

    def forget_room(self, room: RoomId) -> None:
        """Drop what this worker remembers of the room (changed elsewhere)."""

    def forget_role(self, room: RoomId, user: UserId) -> None:
        """Drop what this worker remembers of `user`'s role in `room` (changed elsewhere):
        the next read is the store's."""


@dataclass(frozen=True, slots=True)
class Agreement:
    """One version of a group agreement: the community's own (`room` None) or a room's."""

    community: CommunityId
    room: RoomId | None
    version: int
    text: str

    def public(self) -> dict[str, object]:
        shown: dict[str, object] = {"community": self.community, "version": self.version, "text": self.text}
        if self.room is not None:
            shown["room"] = self.room
        return shown


class Communities(Protocol):
    """Communities, their members, bans and agreements. Implementation: SqlCommunities.

    Reads on the join path (a member, a ban, the current agreement, an acceptance) are kept
    in memory by each worker; a change made on one worker is dropped from every worker's
    memory by `forget` (the control channel carries it), so it holds at the next join.
    """

    async def create(self, name: str, join: JoinPolicy, creator: UserId) -> Community: ...

    async def get(self, community: CommunityId) -> Community | None: ...

    async def only(self) -> Community | None:
        """The community, when there is exactly one; None when there are more (or none)."""

    async def listed(self, user: UserId, everything: bool) -> list[tuple[Community, Member | None]]:
        """Open communities and those `user` is a member of (`everything`: all), with their
        member card in each, oldest first."""

    async def member_of(self, community: CommunityId, user: UserId) -> Member | None: ...

    async def member(self, member: MemberId) -> Member | None: ...

    async def add_member(self, community: CommunityId, user: User, name: str, key: str) -> Member:
        """Make `user` a member under `name`; Conflict when `key` (the name case-folded) is
        another member's, or `user` is a member already."""

    async def rename(self, member: Member, name: str, key: str) -> Member:
        """Conflict when `key` is another member's."""

    async def banned(self, community: CommunityId, user: UserId) -> bool: ...

    async def load_bans(self) -> frozenset[tuple[CommunityId, UserId]]:
        """Every ban, read again from the store (each heartbeat: a ban whose notice was lost
        holds within one)."""

    async def recheck_ban(self, community: CommunityId, user: UserId) -> bool:
        """Read one account's ban from the store now (its notice came from another worker)."""

    async def ban(self, community: CommunityId, user: UserId, actor: UserId, reason: str) -> bool:
        """False when the account was banned already."""

    async def unban(self, community: CommunityId, user: UserId) -> bool:
        """False when the account was not banned."""

    async def muted_until(self, community: CommunityId, user: UserId) -> int:
        """Until when (microseconds since the epoch) `user` is muted in `community`; 0: not."""

    async def mute(self, community: CommunityId, user: UserId, until: int, actor: UserId, reason: str) -> None:
        """Mute `user` until `until` (replacing a mute they had)."""

    async def unmute(self, community: CommunityId, user: UserId) -> bool:
        """False when they were not muted."""

    async def recheck_mute(self, community: CommunityId, user: UserId) -> None:
        """Read one account's mute from the store now (changed on another worker)."""

    async def agreement(self, community: CommunityId, room: RoomId | None) -> Agreement | None:
        """The current version of the community's (or the room's own) agreement; None: none set."""

    async def set_agreement(self, community: CommunityId, room: RoomId | None, text: str, actor: UserId) -> Agreement:
        """Store a new version, the current one from now on."""

    async def accepted(self, member: MemberId, agreement: Agreement) -> bool:
        """Whether `member` accepted that version of that agreement."""

    async def accept(self, member: MemberId, agreement: Agreement) -> None:
        """Record that `member` accepted it now (once; accepting again changes nothing)."""

    def forget_all(self) -> None:
        """Drop everything remembered: notices may have been missed."""

    def forget(self, community: CommunityId, user: UserId | None = None, member: MemberId | None = None) -> None:
        """Drop what this worker remembers of the community (its agreements), of `user` in it
        (their member card, their ban) and of the card `member`: it changed on another worker."""


class AuditLog(Protocol):
    """The record of privileged acts, append-only: nothing updates or deletes an entry.
    Implementation: SqlAuditLog."""

    async def record(
        self,
        actor: UserId,
        action: str,
        *,
        community: CommunityId | None = None,
        room: RoomId | None = None,
        target: str | None = None,
        reason: str | None = None,
    ) -> None: ...

    async def read(self, community: CommunityId | None, before: int | None, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` entries, newest first: of `community` (None: all), with ids below
        `before` (None: from the newest)."""


class SafetyStore(Protocol):
    """The safety queue's cases and the communities' crisis resources. Implementation:
    SqlSafety. A case's text (a report's snapshot, a note) is read by staff only."""

    async def open_case(self, case: Case) -> None: ...

    async def case(self, case_id: str) -> Case | None: ...

    async def cases(self, community: CommunityId, status: CaseStatus | None) -> list[Case]:
        """The community's cases (with `status`, those only), oldest first."""

    async def update_case(self, case: Case, *, expected: CaseStatus) -> bool:
        """Store `case`'s status and steps, if its stored status is still `expected`
        (False: someone changed it meanwhile, and nothing was stored)."""

    async def resources(self, community: CommunityId, locale: str) -> list[dict[str, str]] | None:
        """The crisis resources the community set for `locale` (None: none set)."""

    async def set_resources(self, community: CommunityId, locale: str, resources: list[dict[str, str]]) -> None: ...


class Revocations(Protocol):
    """Tokens signed out before they expire. Implementation: SqlDirectory.

    Kept in memory by each worker once loaded, so a sign-in reads nothing; `load_revoked`
    (each heartbeat) takes in those revoked on other workers."""

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        """Revoke the token `jti` (it expires at `expires_at`, microseconds since the epoch)."""

    async def is_revoked(self, jti: str) -> bool: ...

    async def load_revoked(self) -> set[str]:
        """Every revoked token that has not expired anyway, read again from the store."""

    async def purge_revoked(self) -> None:
        """Forget revocations of tokens that have expired anyway."""


class Outbox(Protocol):
    """Notices for someone to send by e-mail or SMS (reminders). Implementation: SqlOutbox."""

    async def enqueue(
        self, kind: str, users: Sequence[UserId], session: str, occurrence: str, payload: Mapping[str, Any]
    ) -> list[UserId]:
        """Add the notice for each user who does not have it yet (once, whatever the worker);
        returns those users."""


class Limiter(Protocol):
    """Limits that hold across workers. Implementations: MemoryLimiter, RedisLimiter."""

    async def take(self, key: str, rate: float, burst: float) -> float:
        """Spend a token of bucket `key`; 0 on success, else seconds until one is there."""

    async def open_conn(self, user: UserId, conn: str, limit: int) -> bool:
        """Count a connection of `user`; False when they already have `limit` open."""

    async def close_conn(self, user: UserId, conn: str) -> None: ...

    async def refresh_conns(self, conns: Sequence[tuple[UserId, str]]) -> None:
        """Renew the leases of this worker's connections (a dead worker's lapse)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lock: `token` is a fencing token, larger for every new holder of `name`."""

    name: str
    token: int


class Locks(Protocol):
    """Once-only work across workers: a lock with expiry and a fencing token.

    Implementations: MemoryLocks, RedisLocks. See docs/once-only.md.
    """

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        """Take `name` for `ttl` seconds; None when another holder has it."""

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """Extend a held lock; False when it expired and may have passed to someone else."""

    async def release(self, lease: Lease) -> None:
        """Give the lock up early (a no-op when it is no longer ours)."""


class ScheduleStore(Protocol):
    """Scheduled sessions, the exceptions to their rules, and the places taken in their
    occurrences. Implementation: SqlSchedule (SQLite, PostgreSQL); the tests hold a memory one.

    It reads and writes and decides nothing: the rules are `rooms.schedule_rules`, applied by
    `rooms.schedule_service`. Reads see every committed write. A write that depends on what
    is stored (a place against the capacity, the waitlist, an exception) is made inside
    `session_locked`. Raises `Unavailable` when the store cannot be reached; then nothing
    was committed.
    """

    def new_id(self) -> SessionId:
        """A session id never given before."""

    async def create(self, session: Session, creator: UserId) -> None:
        """Store a new session and its facilitators (lead first), in one transaction."""

    async def get(self, session_id: SessionId) -> Session | None: ...

    async def list_room(self, room: RoomId) -> list[Session]:
        """A room's sessions, oldest first."""

    async def occurrences(self, session: Session, start: datetime, end: datetime) -> list[Occurrence]:
        """`session`'s occurrences starting in [start, end) (`Session.occurrences`, with its
        stored exceptions), cancelled ones included, by start."""

    async def occurrences_between(self, start: datetime, end: datetime) -> list[Occurrence]:
        """Every room's occurrences starting in [start, end), cancelled ones included, by start
        (then session and key)."""

    async def registered(self, session_id: SessionId, key: datetime) -> list[UserId]:
        """Who holds a place (not the waitlist) for the occurrence `key`, in the order they asked."""

    async def attendance(
        self, session_id: SessionId, keys: Sequence[datetime], user: UserId
    ) -> dict[datetime, Attendance]:
        """For every one of `keys`: how many are registered and waitlisted, and `user`'s status."""

    async def registrations_of(
        self, user: UserId, start: datetime, end: datetime
    ) -> list[tuple[Session, Occurrence, Status]]:
        """The occurrences starting in [start, end) that `user` holds a place for, with its
        status. Costs what the window holds, not everything the user ever registered for."""

    def session_locked(self, session_id: SessionId) -> AbstractAsyncContextManager[LockedSession]:
        """One transaction on one session, entered once the session's lock is held.

        Serialised per session across workers: a second `session_locked` of the same session
        enters only once the first has committed or rolled back, and reads what it wrote.
        The block's writes commit together when it exits, and none of them when it raises.
        """


class LockedSession(Protocol):
    """One session inside `ScheduleStore.session_locked`: what it held when the lock was
    taken, and the reads and writes the schedule's rules need. Valid inside that block only."""

    @property
    def session(self) -> Session | None:
        """The session as stored, its save in this block included; None when there is none."""

    @property
    def changes(self) -> Mapping[datetime, Change]:
        """Every exception of the session, by key, those saved in this block included."""

    async def places(self, key: datetime) -> list[Place]:
        """Every place for the occurrence `key`, registered or waitlisted, in the order they
        were asked for: the waitlist's order."""

    async def waitlisted(self) -> list[datetime]:
        """The keys of the session's occurrences with someone on their waitlist."""

    async def add_place(self, key: datetime, user: UserId, status: Status) -> None:
        """Give `user`, who holds none, a place for `key`, after every place asked for before."""

    async def remove_place(self, key: datetime, user: UserId) -> None:
        """Take `user`'s place for `key` away (nothing when they hold none)."""

    async def promote(self, key: datetime, users: Sequence[UserId]) -> None:
        """Turn the waitlisted places of `users` for `key` into registered ones; the order of
        places stays as it was."""

    async def save(self, session: Session) -> None:
        """Replace the session's fields and facilitators with `session`'s."""

    async def save_change(self, change: Change, actor: UserId) -> None:
        """Record `change` as the exception of the occurrence `change.key` (replacing the one
        it had), made by `actor`."""
