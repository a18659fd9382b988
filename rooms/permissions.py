"""The permission matrix: every privileged operation × every kind of person, default deny.

This table is the one place where who may do what is decided. Every HTTP endpoint and
websocket op that does something privileged asks `require` (or `allowed`) with the
operation and the actor's `Standing`, and nothing else grants anything. docs/protocol.md
prints the same table (`render`), and tests/test_permissions.py tries every operation as
every kind of person against that printed table.

A person's standing is their account's role, where the operation happens (staff roles, and
every role in a group room, count only where the account is a member; admins are staff
everywhere), and in a room and a session what they are there: one of the room's
facilitators, one of the session's facilitators (its lead or a co-facilitator). A person
holds every column that describes them; an operation is allowed when any of them says yes.

The rules at the end are about the person acted on, not the actor: whom a room can have as
its facilitator, a session as its co-facilitator, and whom a session's moderation reaches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from rooms.errors import BadRequest, Forbidden
from rooms.model import MemberRole, Role, RoomKind


class Who(StrEnum):
    """The columns of the matrix."""

    PATIENT = "patient"
    CAREGIVER = "caregiver"
    FACILITATOR = "facilitator"
    CLINICIAN = "clinician"
    ADMIN = "admin"
    ROOM_FACILITATOR = "room facilitator"
    SESSION_FACILITATOR = "session facilitator"


class Op(StrEnum):
    """The rows: every privileged operation, named as docs/protocol.md prints it."""

    # Communities
    COMMUNITY_CREATE = "create a community"
    MEMBER_INVITE = "add an account to a community"
    MEMBER_ACCOUNT = "read a member's account"
    AGREEMENT_SET = "set the group agreement"
    BAN = "ban a member, or lift a ban"
    BAN_STAFF = "ban a member of staff, or lift their ban"
    CASES = "see and handle the safety queue"
    REDACT = "redact someone's message"
    AUDIT_READ = "read the audit log"
    ROOM_MODERATE = "set a room's slow mode, suspend it"
    COMMUNITY_MUTE = "mute a member in the community, or lift it"
    CRISIS_RESOURCES = "set the crisis resources"
    # Rooms
    ROOM_CREATE = "create a room"
    ROOM_ENTER = "join a group room, see its sessions"
    ROOM_MEMBERS = "add a room member"
    ROOM_HOURS = "change a room's open hours"
    ON_DUTY = "join on duty"
    ROOM_FACILITATE = "join as the room's facilitator"
    # Scheduled sessions
    SESSION_SCHEDULE = "schedule a session"
    SESSION_MANAGE = "change, cancel or move a session"
    SESSION_REGISTER = "register for a session"
    # Live sessions
    SESSION_OPEN = "open a live session"
    SESSION_RUN = "run a live session"
    LOBBY = "admit or deny someone waiting"
    KNOCK_ANSWER = "answer a knock"
    FLOOR = "give, take back or order the floor"
    MUTE = "mute or unmute someone"
    REMOVE = "remove someone from the session"
    CHECKIN_START = "start a check-in round"
    CHECKIN_SKIP = "skip someone's check-in turn"
    POST_ANYWAY = "post while waiting, muted or without the floor"
    ATTENDANCE = "see attendance"


# Where the protocol does each operation (the table's second column).
WHERE: dict[Op, str] = {
    Op.COMMUNITY_CREATE: "`POST /api/communities`",
    Op.MEMBER_INVITE: "`POST /api/communities/{c}/members` with `user`; joining an invite-only community",
    Op.MEMBER_ACCOUNT: "`GET /api/communities/{c}/members/{m}`",
    Op.AGREEMENT_SET: "`PUT /api/communities/{c}/agreement`",
    Op.BAN: "`POST /api/communities/{c}/bans`, `DELETE /api/communities/{c}/bans/{m}`",
    Op.BAN_STAFF: "the same, of a facilitator or clinician",
    Op.CASES: "`GET /api/communities/{c}/cases`, `POST /api/cases/{k}`; `alert` events",
    Op.REDACT: "`redact`",
    Op.AUDIT_READ: "`GET /api/audit?community=c` (admins: without `community` too)",
    Op.ROOM_MODERATE: "`PATCH /api/rooms/{r}` with `slow_mode`, `suspended`; exempt from both",
    Op.COMMUNITY_MUTE: "`POST /api/communities/{c}/mutes`, `DELETE …/mutes/{m}` (of staff: as a ban)",
    Op.CRISIS_RESOURCES: "`PUT /api/communities/{c}/resources/crisis`",
    Op.ROOM_CREATE: "`POST /api/rooms`",
    Op.ROOM_ENTER: "`join`; `GET /api/rooms/{r}/sessions`, a session's occurrences, the calendars",
    Op.ROOM_MEMBERS: "`POST /api/rooms/{r}/members`",
    Op.ROOM_HOURS: "`PATCH /api/rooms/{r}`",
    Op.ON_DUTY: "`join` with `on_duty`",
    Op.ROOM_FACILITATE: "`join`: never wait in a lobby, see the room's private events",
    Op.SESSION_SCHEDULE: "`POST /api/rooms/{r}/sessions`",
    Op.SESSION_MANAGE: "`PATCH /api/sessions/{s}`, an occurrence's `cancel` and `move`",
    Op.SESSION_REGISTER: "`POST /api/sessions/{s}/occurrences/{key}/registration`",
    Op.SESSION_OPEN: "`session` `open`",
    Op.SESSION_RUN: "`session` `start`, `end`, `lock`, `unlock`, `floor_only`, `pin`, `lead`",
    Op.LOBBY: "`admit`, `deny`",
    Op.KNOCK_ANSWER: "`knock` with `user`",
    Op.FLOOR: "`floor` `give`, `take`, `order`",
    Op.MUTE: "`mute`",
    Op.REMOVE: "`remove`",
    Op.CHECKIN_START: "`checkin` `start`",
    Op.CHECKIN_SKIP: "`checkin` while it is someone else's turn",
    Op.POST_ANYWAY: "`send`, `edit`, `delete`, `react`, `typing` in a live session",
    Op.ATTENDANCE: "`attendance`",
}

_STAFF = frozenset({Who.FACILITATOR, Who.CLINICIAN, Who.ADMIN})
_EVERYONE = frozenset(Who)
_RUNS_ROOM = frozenset({Who.ADMIN, Who.ROOM_FACILITATOR})
_RUNS_SESSION = frozenset({Who.SESSION_FACILITATOR})

MATRIX: dict[Op, frozenset[Who]] = {
    Op.COMMUNITY_CREATE: frozenset({Who.ADMIN}),
    Op.MEMBER_INVITE: _STAFF,
    Op.MEMBER_ACCOUNT: _STAFF,
    Op.AGREEMENT_SET: _STAFF,
    Op.BAN: _STAFF,
    Op.BAN_STAFF: frozenset({Who.ADMIN}),
    Op.CASES: _STAFF,
    Op.REDACT: _STAFF | {Who.ROOM_FACILITATOR},
    Op.AUDIT_READ: frozenset({Who.CLINICIAN, Who.ADMIN}),
    Op.ROOM_MODERATE: _STAFF | {Who.ROOM_FACILITATOR},
    Op.COMMUNITY_MUTE: _STAFF,
    Op.CRISIS_RESOURCES: _STAFF,
    Op.ROOM_CREATE: frozenset({Who.FACILITATOR, Who.ADMIN}),
    Op.ROOM_ENTER: _EVERYONE,
    Op.ROOM_MEMBERS: _RUNS_ROOM,
    Op.ROOM_HOURS: _RUNS_ROOM,
    Op.ON_DUTY: _STAFF,
    Op.ROOM_FACILITATE: _RUNS_ROOM,
    Op.SESSION_SCHEDULE: _RUNS_ROOM,
    Op.SESSION_MANAGE: frozenset({Who.ADMIN, Who.SESSION_FACILITATOR}),
    Op.SESSION_REGISTER: _EVERYONE - {Who.ADMIN},
    Op.SESSION_OPEN: _RUNS_ROOM,
    Op.SESSION_RUN: _RUNS_SESSION,
    Op.LOBBY: _RUNS_SESSION,
    Op.KNOCK_ANSWER: _RUNS_SESSION,
    Op.FLOOR: _RUNS_SESSION,
    Op.MUTE: _RUNS_SESSION,
    Op.REMOVE: _RUNS_SESSION,
    Op.CHECKIN_START: _RUNS_SESSION,
    Op.CHECKIN_SKIP: _RUNS_SESSION,
    Op.POST_ANYWAY: _RUNS_ROOM | _RUNS_SESSION,
    Op.ATTENDANCE: _RUNS_ROOM,
}

_SESSION_ONLY = "Only the session's facilitators can do that."

# What `require` answers (`forbidden`) for each operation refused. Four are asked with
# `allowed` and never refused as such (docs/protocol.md, Permissions): without the right, a
# join is a member's, a knock one's own, a check-in answer out of turn a conflict, and a
# post in a live session meets the session's rules.
REFUSALS: dict[Op, str] = {
    Op.COMMUNITY_CREATE: "Only admins can create communities.",
    Op.MEMBER_INVITE: "Only this community's staff can add people to it.",
    Op.MEMBER_ACCOUNT: "Only this community's staff can see whose a member card is.",
    Op.AGREEMENT_SET: "Only this community's staff can change its agreement.",
    Op.BAN: "Only this community's staff can ban.",
    Op.BAN_STAFF: "Only an admin can ban a member of staff, or lift their ban.",
    Op.CASES: "Only this community's staff see its safety queue.",
    Op.REDACT: "Only staff can redact someone's message.",
    Op.AUDIT_READ: "Only admins, and a community's clinicians, read its audit log.",
    Op.ROOM_MODERATE: "Only staff can change a room's slow mode or suspend it.",
    Op.COMMUNITY_MUTE: "Only this community's staff can mute.",
    Op.CRISIS_RESOURCES: "Only this community's staff set its crisis resources.",
    Op.ROOM_CREATE: "Only facilitators and admins can open rooms.",
    Op.ROOM_ENTER: "This group is for its members. Ask its facilitator to add you.",
    Op.ROOM_MEMBERS: "Only this room's facilitators can add members.",
    Op.ROOM_HOURS: "Only this room's facilitators can change its open hours.",
    Op.ON_DUTY: "Only staff can be on duty.",
    Op.ROOM_FACILITATE: "Only this room's facilitators can do that.",
    Op.SESSION_SCHEDULE: "Only this room's facilitators can schedule sessions.",
    Op.SESSION_MANAGE: "Only this session's facilitators can change it.",
    Op.SESSION_REGISTER: "Only members of this group can register for its sessions.",
    Op.SESSION_OPEN: "Only this room's facilitators can open a session.",
    Op.SESSION_RUN: _SESSION_ONLY,
    Op.LOBBY: _SESSION_ONLY,
    Op.KNOCK_ANSWER: _SESSION_ONLY,
    Op.FLOOR: _SESSION_ONLY,
    Op.MUTE: _SESSION_ONLY,
    Op.REMOVE: _SESSION_ONLY,
    Op.CHECKIN_START: _SESSION_ONLY,
    Op.CHECKIN_SKIP: "It is not your turn.",
    Op.POST_ANYWAY: "Only the room's and the session's facilitators can do that.",
    Op.ATTENDANCE: "Only this room's facilitators see attendance.",
}


@dataclass(frozen=True, slots=True)
class Standing:
    """What the actor is, where the operation happens. Everything not said is not held.

    `member`: a member of the community (a role other than admin counts only then);
    `room_member`: where a room is in question, whether they belong in it (a group's
    members; everyone in a drop-in room), for the role to count there too (True where no
    room is in question); `room_facilitator`: one of the room's facilitators;
    `session_facilitator`: one of the session's facilitators (the lead or a co-facilitator).
    Facilitating counts for staff accounts only.
    """

    role: Role
    member: bool = False
    room_member: bool = True
    room_facilitator: bool = False
    session_facilitator: bool = False

    def columns(self) -> frozenset[Who]:
        """The columns of the matrix this person holds."""
        held: set[Who] = set()
        if self.role is Role.ADMIN or (self.member and self.room_member):
            held.add(Who(self.role.value))
        if self.role.is_staff and self.room_facilitator:
            held.add(Who.ROOM_FACILITATOR)
        if self.role.is_staff and self.session_facilitator:
            held.add(Who.SESSION_FACILITATOR)
        return frozenset(held)

    def in_session(self, facilitates: bool) -> Standing:
        """The same person in a session they do (or do not) facilitate."""
        return self if facilitates == self.session_facilitator else replace(self, session_facilitator=facilitates)


NOBODY = Standing(Role.PATIENT)  # no standing anywhere (an account unknown here): holds no column


def in_community(role: Role, *, member: bool) -> Standing:
    """A person's standing in a community, where no room is in question."""
    return Standing(role, member=member)


def in_room(role: Role, *, member: bool, kind: RoomKind, membership: MemberRole | None) -> Standing:
    """A person's standing in a room: `member` of its community, and `membership` their role
    among the room's members (None: not one). A room's members are members of its community."""
    return Standing(
        role,
        member=member or membership is not None,
        room_member=kind is RoomKind.DROP_IN or membership is not None,
        room_facilitator=membership is MemberRole.FACILITATOR,
    )


def allowed(op: Op, standing: Standing) -> bool:
    return not MATRIX[op].isdisjoint(standing.columns())


def require(op: Op, standing: Standing) -> None:
    """Forbidden, with the refusal for `op`, unless the matrix allows it."""
    if not allowed(op, standing):
        raise Forbidden(REFUSALS[op])


def render() -> str:
    """The matrix as the Markdown table docs/protocol.md prints."""
    columns = list(Who)
    lines = [
        "| operation | op or endpoint | " + " | ".join(columns) + " |",
        "| --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for op in Op:
        marks = ["yes" if who in MATRIX[op] else "—" for who in columns]
        lines.append(f"| {op.value} | {WHERE[op]} | " + " | ".join(marks) + " |")
    return "\n".join(lines)


# Rules about the person acted on


def require_room_role(target: Role, role: MemberRole) -> None:
    """Only staff can be made a room's facilitator; anyone can be a member."""
    if role is MemberRole.FACILITATOR and not target.is_staff:
        raise Forbidden("Only staff can facilitate a room.")


def require_co_facilitator(target: Role, membership: MemberRole | None) -> None:
    """A scheduled session's co-facilitators are staff members of its room."""
    if not target.is_staff or membership is None:
        raise BadRequest("Co-facilitators must be staff members of this room.")


def require_live_co_facilitator(membership: MemberRole | None) -> None:
    """A live session opened by hand is run with facilitators of its room."""
    if membership is not MemberRole.FACILITATOR:
        raise BadRequest("Co-facilitators must be facilitators of this room.")


def require_bannable(target: Role, *, itself: bool) -> None:
    """Nobody bans themselves, and admins are not banned."""
    if itself or target is Role.ADMIN:
        raise Forbidden("That member cannot be banned.")


# Whom a session's facilitators cannot mute or remove: the room's staff and each other.
UNMODERATED = frozenset({Who.ADMIN, Who.ROOM_FACILITATOR, Who.SESSION_FACILITATOR})


def moderated(target: Standing) -> bool:
    """Whether mute and removal reach the person with standing `target` in the room and session."""
    return UNMODERATED.isdisjoint(target.columns())
