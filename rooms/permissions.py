"""The permission matrix: every privileged operation × every kind of person, default deny.

This table is the one place where who may do what is decided; every HTTP endpoint and
websocket op that does something privileged asks `require` (or `allowed`) with the
operation and the actor's `Standing`, and nothing else grants anything. docs/protocol.md
prints the same table (`render`), and the tests try every operation as every kind of person.

A person's standing is their account's role, inside one community (staff roles count
only where the account is a member, except admins, who are staff everywhere), and in a
room and a session what they are there: one of the room's facilitators, one of the live
session's facilitators (its lead or a co-facilitator).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rooms.errors import Forbidden
from rooms.model import Role


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
    """The rows: every privileged operation, as docs/protocol.md names it."""

    COMMUNITY_CREATE = "create a community"
    MEMBER_INVITE = "add an account to a community"
    MEMBER_ACCOUNT = "read a member's account"
    AGREEMENT_SET = "set the group agreement"
    BAN = "ban or lift a ban"
    ROOM_CREATE = "create a room"
    ROOM_MEMBERS = "add a room member"
    ROOM_FACILITATE = "join as the room's facilitator"
    ROOM_SETTINGS = "change a room's open hours"
    ON_DUTY = "be on duty in a room"
    SESSION_SCHEDULE = "schedule a session"
    SESSION_MANAGE = "change, cancel or move a session"
    SESSION_OPEN = "open a live session"
    SESSION_ATTENDANCE = "see attendance"
    SESSION_RUN = "run a live session"
    SESSION_REGISTER = "register for a session"


_STAFF = frozenset({Who.FACILITATOR, Who.CLINICIAN, Who.ADMIN})

MATRIX: dict[Op, frozenset[Who]] = {
    Op.COMMUNITY_CREATE: frozenset({Who.ADMIN}),
    Op.MEMBER_INVITE: _STAFF,
    Op.MEMBER_ACCOUNT: _STAFF,
    Op.AGREEMENT_SET: _STAFF,
    Op.BAN: _STAFF,
    Op.ROOM_CREATE: frozenset({Who.FACILITATOR, Who.ADMIN}),
    Op.ROOM_MEMBERS: frozenset({Who.ADMIN, Who.ROOM_FACILITATOR}),
    Op.ROOM_FACILITATE: frozenset({Who.ADMIN, Who.ROOM_FACILITATOR}),
    Op.ROOM_SETTINGS: frozenset({Who.ADMIN, Who.ROOM_FACILITATOR}),
    Op.ON_DUTY: _STAFF,
    Op.SESSION_SCHEDULE: frozenset({Who.ADMIN, Who.ROOM_FACILITATOR}),
    Op.SESSION_MANAGE: frozenset({Who.ADMIN, Who.SESSION_FACILITATOR}),
    Op.SESSION_OPEN: frozenset({Who.ADMIN, Who.ROOM_FACILITATOR}),
    Op.SESSION_ATTENDANCE: frozenset({Who.ADMIN, Who.ROOM_FACILITATOR}),
    Op.SESSION_RUN: frozenset({Who.SESSION_FACILITATOR}),
    Op.SESSION_REGISTER: frozenset({Who.PATIENT, Who.CAREGIVER, Who.FACILITATOR, Who.CLINICIAN}),
}

REFUSALS: dict[Op, str] = {
    Op.COMMUNITY_CREATE: "Only admins can create communities.",
    Op.MEMBER_INVITE: "Only this community's staff can add people to it.",
    Op.MEMBER_ACCOUNT: "Only this community's staff can see whose a member card is.",
    Op.AGREEMENT_SET: "Only this community's staff can change its agreement.",
    Op.BAN: "Only this community's staff can ban.",
    Op.ROOM_CREATE: "Only facilitators and admins can open rooms.",
    Op.ROOM_MEMBERS: "Only this room's facilitators can add members.",
    Op.ROOM_FACILITATE: "Only this room's facilitators can do that.",
    Op.ROOM_SETTINGS: "Only this room's facilitators can change its settings.",
    Op.ON_DUTY: "Only staff can be on duty.",
    Op.SESSION_SCHEDULE: "Only this room's facilitators can schedule sessions.",
    Op.SESSION_MANAGE: "Only this session's facilitators can change it.",
    Op.SESSION_OPEN: "Only this room's facilitators can open a session.",
    Op.SESSION_ATTENDANCE: "Only this room's facilitators see attendance.",
    Op.SESSION_RUN: "Only the session's facilitators can do that.",
    Op.SESSION_REGISTER: "Only this group's members can register.",
}


@dataclass(frozen=True, slots=True)
class Standing:
    """What the actor is, where the operation happens.

    `member`: they are a member of the community (a staff role counts only then, but for
    admins); `room_facilitator`: a facilitator of the room (a staff account); `session_facilitator`:
    one of the live (or scheduled) session's facilitators; `room_member`: in the room's members,
    for what a group's own members do.
    """

    role: Role
    member: bool = True
    room_facilitator: bool = False
    session_facilitator: bool = False
    room_member: bool = True

    def columns(self) -> frozenset[Who]:
        held: set[Who] = set()
        if self.role is Role.ADMIN or (self.member and self.room_member):
            held.add(Who(self.role.value))
        if self.room_facilitator and self.role.is_staff:
            held.add(Who.ROOM_FACILITATOR)
        if self.session_facilitator:
            held.add(Who.SESSION_FACILITATOR)
        return frozenset(held)


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
        "| operation | " + " | ".join(columns) + " |",
        "| --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for op in Op:
        marks = ["yes" if who in MATRIX[op] else "—" for who in columns]
        lines.append(f"| {op.value} | " + " | ".join(marks) + " |")
    return "\n".join(lines)
