"""Who may do what: pure functions of roles, so every rule is testable without a socket.

Least privilege: each function answers for one action and grants nothing by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rooms.errors import Forbidden
from rooms.model import MemberRole, Role, Room, RoomKind, User

if TYPE_CHECKING:
    from rooms.schedule import Session  # which imports this module, through rooms.service


def can_join(user: User, room: Room, membership: MemberRole | None) -> bool:
    """Drop-in rooms admit every signed-in user; groups their members, facilitators and admins."""
    if room.kind is RoomKind.DROP_IN:
        return True
    return membership is not None or user.role is Role.ADMIN


def can_create_room(user: User) -> bool:
    """Facilitators and admins open rooms."""
    return user.role in (Role.FACILITATOR, Role.ADMIN)


def can_manage_members(user: User, membership: MemberRole | None) -> bool:
    """A room's own facilitators and admins add members; a facilitator of another room may not."""
    return user.role is Role.ADMIN or membership is MemberRole.FACILITATOR


def can_hold_room_role(user: User, role: MemberRole) -> bool:
    """Only staff can be made a room's facilitator; anyone can be a member."""
    return role is MemberRole.MEMBER or user.role.is_staff


def can_schedule(user: User, membership: MemberRole | None) -> bool:
    """A room's facilitators and admins schedule its sessions."""
    return user.role is Role.ADMIN or membership is MemberRole.FACILITATOR


def can_see_schedule(user: User, room: Room, membership: MemberRole | None) -> bool:
    """Whoever may join a room may see its sessions and their occurrences."""
    return can_join(user, room, membership)


def require_on_duty(user: User, on_duty: bool) -> None:
    """Only staff are shown as on duty in a room."""
    if on_duty and not user.role.is_staff:
        raise Forbidden("Only staff can be on duty.")


def require_room_facilitator(facilitates: bool, refusal: str) -> None:
    """What only a room's facilitators (and admins) do: open a session, see attendance."""
    if not facilitates:
        raise Forbidden(refusal)


def can_register(membership: MemberRole | None) -> bool:
    """A group's members and facilitators register for its sessions; an admin who is not in
    the group sees them and does not take a place."""
    return membership is not None


def can_manage_session(user: User, session: Session, membership: MemberRole | None) -> bool:
    """A session's own facilitators, while they are staff and still in its room, and admins
    change it (its fields, and cancel or move its occurrences)."""
    if user.role is Role.ADMIN:
        return True
    return user.id in session.facilitators and membership is not None and user.role.is_staff


def can_co_facilitate(user: User, membership: MemberRole | None) -> bool:
    """A session's co-facilitators are staff members of its room."""
    return user.role.is_staff and membership is not None
