"""Where people are (the lobby, the room, or out) and who sees what of a live session."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rooms.errors import Forbidden
from rooms.live.state import LIVE, LiveRoom, LiveSession
from rooms.permissions import Op, Standing, allowed

# What a member waiting in the lobby sees of the session, besides what is addressed to them.
LOBBY_ACTIONS = frozenset({"opened", "started", "ended", "locked", "pinned"})


class Place(StrEnum):
    ROOM = "room"
    LOBBY = "lobby"
    OUT = "out"  # removed from the session: their sockets in the room close (4403)


def place(room: LiveRoom, user: str, *, lobby: bool) -> Place:
    """Where someone joining goes, by the session as it stands when their join completes
    (it may have moved on while the join read the store): out if they were removed, the
    lobby if they were to wait and still must, else the room."""
    session = room.active
    if session is not None and user in session.removed:
        return Place.OUT
    if lobby and session is not None and not session.inside(user):
        return Place.LOBBY
    return Place.ROOM


@dataclass(frozen=True, slots=True)
class Moves:
    """What a session event does to the people in the room: whom it lets in from the
    lobby (`everyone`, when the session ends), and whom it puts out."""

    admit: frozenset[str] = frozenset()
    everyone: bool = False
    out: str | None = None

    def admits(self, user: str) -> bool:
        return self.everyone or user in self.admit


NO_MOVES = Moves()


def moves(event: Mapping[str, Any]) -> Moves:
    action = event["action"]
    if action == "admitted":
        return Moves(admit=frozenset(event["users"]))
    if action == "ended":
        return Moves(everyone=True)
    if action == "removed":
        return Moves(out=event["user"])
    return NO_MOVES


# Who sees what


def visible(event: Mapping[str, Any], user: str, *, facilitator: bool) -> bool:
    """Whether a durable event may be shown to `user` (a private `to` list, else everyone)."""
    to = event.get("to")
    return to is None or facilitator or user in to


def session_view(session: LiveSession, user: str, standing: Standing, *, waiting: bool) -> dict[str, Any]:
    """The session as `user` (of `standing` in the room) sees it on joining (§5a.4): its
    outline while they wait; the facilitators' view (who waits, who is in) for whoever joins
    as the room's facilitator or may admit; else what every participant sees."""
    if allowed(Op.ROOM_FACILITATE, standing) or allowed(Op.LOBBY, standing.in_session(session.facilitates(user))):
        return session.for_facilitators()
    return session.lobby_view() if waiting else session.public()


def for_lobby(event: Mapping[str, Any], user: str) -> Mapping[str, Any] | None:
    """The event as a member waiting in the lobby may see it, or None: who else waits, who
    is in and who registered stay out of it."""
    if not lobby_sees(event, user):
        return None
    if event["action"] == "opened":
        return {k: v for k, v in event.items() if k not in ("present", "registered")}
    if event["action"] == "admitted":
        return {**event, "users": [user]}
    return event


def lobby_sees(event: Mapping[str, Any], user: str) -> bool:
    """Whether a member waiting in the lobby sees an event: the session's outline, and what
    concerns them (a knock, a denial, their admission); nothing of the room itself."""
    if event["ev"] != "session":
        return False
    action = event["action"]
    return action in LOBBY_ACTIONS or user in event.get("to", ()) or user in event.get("users", ())


def may_send(room: LiveRoom, user: str, standing: Standing, *, message: bool = True) -> None:
    """Raise unless `user` (of `standing` in the room) may act in the room now: nobody waiting
    or removed may (edit, react, type...); for a `message`, mute and floor-only mode apply
    too. Whom the permission matrix lets post past them always may."""
    session = room.active
    if session is None or allowed(Op.POST_ANYWAY, standing.in_session(session.facilitates(user))):
        return
    if user in session.removed:
        raise Forbidden("You were removed from this session.")
    if not session.inside(user):
        raise Forbidden("You are waiting in the lobby; the facilitator will let you in.")
    if not message:
        return
    if user in session.muted:
        raise Forbidden("The facilitator has muted you for now.")
    if session.floor_only and session.state == LIVE and session.floor != user:
        raise Forbidden("Only the person with the floor can post right now. Raise your hand.")
