"""Plain values of the domain: ids, roles, users, rooms and durable events."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NewType

from rooms.clock import iso_ts

UserId = NewType("UserId", str)
RoomId = NewType("RoomId", str)
ConnId = NewType("ConnId", str)
Seq = NewType("Seq", int)
CommunityId = NewType("CommunityId", str)
MemberId = NewType("MemberId", str)


class Role(StrEnum):
    """A user's role across Hearth."""

    PATIENT = "patient"
    CAREGIVER = "caregiver"
    FACILITATOR = "facilitator"
    CLINICIAN = "clinician"
    ADMIN = "admin"

    @property
    def is_staff(self) -> bool:
        return self in STAFF_ROLES


STAFF_ROLES = frozenset({Role.FACILITATOR, Role.CLINICIAN, Role.ADMIN})
SIGNUP_ROLES = frozenset({Role.PATIENT, Role.CAREGIVER})


class RoomKind(StrEnum):
    """`group` rooms admit members and facilitators; `drop_in` rooms every signed-in user."""

    GROUP = "group"
    DROP_IN = "drop_in"


class MemberRole(StrEnum):
    """A user's role within one room."""

    MEMBER = "member"
    FACILITATOR = "facilitator"


@dataclass(frozen=True, slots=True)
class User:
    id: UserId
    username: str
    name: str
    role: Role

    def public(self) -> dict[str, str]:
        """The account as its owner sees it (sign-in answers, `auth`): never shown to a peer,
        who sees a member card (`Member.public`)."""
        return {"id": self.id, "name": self.name, "role": self.role.value}


class JoinPolicy(StrEnum):
    """Who becomes a member of a community: anyone signed in (`open`), or whom staff add."""

    OPEN = "open"
    INVITE = "invite"


@dataclass(frozen=True, slots=True)
class Community:
    """A condition-specific group of rooms, whose members meet under names chosen for it."""

    id: CommunityId
    name: str
    join: JoinPolicy

    def public(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "join": self.join.value}


@dataclass(frozen=True, slots=True)
class Member:
    """An account inside one community, under the display name chosen for it.

    Inside a community a person is their member card (`public()`): peers see the member id,
    never `account`, and one account's member ids differ between communities.
    """

    id: MemberId
    community: CommunityId
    account: UserId
    name: str
    role: Role

    def public(self) -> dict[str, str]:
        """The member card: all that peers see of a person."""
        return {"id": self.id, "name": self.name, "role": self.role.value}


@dataclass(frozen=True, slots=True)
class Room:
    id: RoomId
    name: str
    kind: RoomKind
    community: CommunityId
    open_hours: Mapping[str, Any] | None = None  # see rooms/hours.py
    slow_mode: int = 0  # seconds between a member's messages (0: off)
    suspended: str | None = None  # the notice, while its staff have suspended the room

    def public(self) -> dict[str, Any]:
        card: dict[str, Any] = {"id": self.id, "name": self.name, "kind": self.kind.value, "community": self.community}
        if self.slow_mode:
            card["slow_mode"] = self.slow_mode
        if self.suspended is not None:
            card["suspended"] = True
            card["notice"] = self.suspended
        return card


# The sender of what Hearth itself commits (a session opened by the schedule, a timer's end).
HEARTH = Member(MemberId("hearth"), CommunityId(""), UserId("hearth"), "Hearth", Role.ADMIN)


class EventKind(StrEnum):
    """Durable room events; each is committed with the room's next seq."""

    MESSAGE = "message"
    EDIT = "edit"
    DELETE = "delete"
    REACTION = "reaction"
    SESSION = "session"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event on its way to the store: everything but its seq and timestamp.

    `target` is the seq of the message an edit, deletion or reaction acts on.
    """

    room: RoomId
    kind: EventKind
    sender: Member
    body: Mapping[str, Any]
    client_id: str | None = None
    target: Seq | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A committed durable event, as the store returns it."""

    room: RoomId
    seq: Seq
    ts: datetime
    kind: EventKind
    sender: Mapping[str, str]
    body: Mapping[str, Any] = field(default_factory=dict)
    client_id: str | None = None
    target: Seq | None = None

    def to_wire(self) -> dict[str, Any]:
        """The event as every client sees it (PROTOCOL.md, core events)."""
        wire: dict[str, Any] = {
            "ev": self.kind.value,
            "room": self.room,
            "seq": self.seq,
            "ts": iso_ts(self.ts),
            "from": dict(self.sender),
        }
        if self.target is not None:
            wire["target"] = self.target
        wire.update(self.body)
        if self.client_id is not None:
            wire["client_id"] = self.client_id
        return wire
