"""The schedule service: who may see, schedule, change and register for sessions, and what
each of those does, through the `ScheduleStore` and `Directory` ports.

A call that acts on a session takes a `Permit`, which `permit` gives only to a user the
permission matrix (`rooms.permissions`) allows to do that: whoever may join the room sees
its sessions, its members register, and the session's own facilitators and admins change
it. A session's facilitator counts as one while they are in its room. Asking for the permit
first keeps the order of answers fixed: no such session or room (404), then not allowed
(403), and only then whatever is wrong with the request itself (400, 409).

Every decision that depends on what is stored (a place against the capacity, the waitlist,
a cancellation or a move) is made inside `ScheduleStore.session_locked`, so it holds however
many workers take registrations at once: the facts are read under the session's lock, the
rules of `rooms.schedule_rules` decide, and the writes commit with the lock still held.

People are accounts in the store (a session's facilitators, a place) and member cards on the
wire: a session's `facilitators` are shown, and `co_facilitators` given, as member ids of its
room's community (`rooms.communities`), so that nobody learns an account id from a schedule.

Values in (a user, ids, the plain fields of a request), values or `rooms.errors` out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from rooms.communities import CommunityService
from rooms.errors import BadRequest, Forbidden, NotFound
from rooms.model import Role, Room, RoomId, RoomKind, User, UserId
from rooms.permissions import REFUSALS, Op, Standing, allowed, require, require_co_facilitator
from rooms.ports import Directory, LockedSession, ScheduleStore
from rooms.schedule import (
    LATEST,
    Occurrence,
    Session,
    SessionId,
    build_session,
    check_reason,
    check_window,
    parse_local,
)
from rooms.schedule_rules import (
    Attendance,
    Place,
    Registration,
    Status,
    changed,
    check_changeable,
    check_registrable,
    frees_places,
    newcomer,
    promoted,
    standing,
)
from rooms.service import room_standing

# Windows
DEFAULT_WINDOW = timedelta(days=60)  # occurrences listed when no `to` is given
FEED_PAST = timedelta(days=30)
FEED_AHEAD = timedelta(days=336)  # with FEED_PAST, one 366-day expansion

# Limits
MAX_CO_FACILITATORS = 10
MAX_ID = 64  # characters of a member id

FeedEntry = tuple[Session, Occurrence, Status | None]


class Action(StrEnum):
    """What a `Permit` allows on a session. Every permit allows seeing it."""

    SEE = "see"
    REGISTER = "register"
    MANAGE = "manage"


_OPS = {Action.SEE: Op.ROOM_ENTER, Action.REGISTER: Op.SESSION_REGISTER, Action.MANAGE: Op.SESSION_MANAGE}


@dataclass(frozen=True, slots=True)
class Permit:
    """`user` may `action` `session` (of `room`), as `ScheduleService.permit` found."""

    user: User
    session: Session
    action: Action
    room: Room


@dataclass(frozen=True, slots=True)
class RoomPermit:
    """`user` may schedule sessions in `room`, as `ScheduleService.permit_scheduling` found."""

    user: User
    room: Room


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ScheduleService:
    """What members and facilitators do with scheduled sessions, on the ports given (and a
    clock, the time every rule is checked at)."""

    def __init__(
        self,
        store: ScheduleStore,
        directory: Directory,
        members: CommunityService,
        *,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.directory = directory
        self.members = members
        self.communities = members.communities
        self.clock = clock

    async def card(self, room: Room, session: Session) -> dict[str, Any]:
        """A session as the room's members see it: its facilitators (the lead first) by the
        member ids they have in the room's community."""
        return {**session.to_wire(), "facilitators": await self.members.ids_in(room.community, session.facilitators)}

    # Access

    async def permit(self, user: User, session_id: SessionId, action: Action) -> Permit:
        """`user`'s permit for `action` on the session: NotFound without one (or without its
        room), Forbidden when they may not."""
        session = await self.store.get(session_id)
        if session is None:
            raise NotFound("There is no such session.")
        room, standing = await self._visible_room(user, session.room, session)
        require(_OPS[action], standing)
        return Permit(user, session, action, room)

    async def permit_scheduling(self, user: User, room_id: RoomId) -> RoomPermit:
        """`user`'s permit to schedule sessions in the room, which must be a group room."""
        room = await self.directory.get_room(room_id)
        if room is None:
            raise NotFound("There is no such room.")
        require(Op.SESSION_SCHEDULE, await self._standing(user, room))
        if room.kind is not RoomKind.GROUP:
            raise BadRequest("Only group rooms have scheduled sessions.")
        return RoomPermit(user, room)

    async def _standing(self, user: User, room: Room, session: Session | None = None) -> Standing:
        """What `user` is in `room`, and in `session` if one is named: one of its facilitators
        while they are in the room."""
        standing = await room_standing(self.directory, self.communities, user, room)
        facilitates = session is not None and user.id in session.facilitators and standing.room_member
        return standing.in_session(facilitates)

    async def _visible_room(self, user: User, room_id: RoomId, session: Session | None = None) -> tuple[Room, Standing]:
        """The room and the user's standing there (and in `session`), once they may see its
        schedule."""
        room = await self.directory.get_room(room_id)
        if room is None:
            raise NotFound("There is no such room.")
        standing = await self._standing(user, room, session)
        require(Op.ROOM_ENTER, standing)
        return room, standing

    # Sessions

    async def sessions(self, user: User, room_id: RoomId) -> tuple[Room, list[Session]]:
        """The room, and its sessions, oldest first (none for a drop-in room)."""
        room, _ = await self._visible_room(user, room_id)
        return room, await self.store.list_room(room.id) if room.kind is RoomKind.GROUP else []

    async def create(self, permit: RoomPermit, fields: Mapping[str, object]) -> Session:
        """A new session of the permit's room, led by its user, from the fields of a request
        (`rooms.schedule.FIELDS`, and `co_facilitators`: member ids of the room's community)."""
        fields = dict(fields)
        room, lead = permit.room, permit.user.id
        co = await self._co_facilitators(room, lead, fields.pop("co_facilitators", []))
        if permit.user.role is Role.ADMIN:  # an admin who never came here gets a card to be shown by
            await self.members.own_card(permit.user, room.community)
        session = build_session(id=self.store.new_id(), room=room.id, facilitators=(lead, *co), fields=fields)
        await self.store.create(session, lead)
        return session

    async def update(self, permit: Permit, fields: Mapping[str, object]) -> Session:
        """The session with `fields` changed. A capacity raised or removed promotes the
        waitlists of its occurrences at once."""
        _need(permit, Action.MANAGE)
        fields = dict(fields)
        session = permit.session
        lead, co = session.facilitators[0], list(session.facilitators[1:])
        if "co_facilitators" in fields:
            co = await self._co_facilitators(permit.room, lead, fields.pop("co_facilitators"))
        new = build_session(id=session.id, room=session.room, facilitators=(lead, *co), fields=fields, base=session)
        async with self.store.session_locked(session.id) as locked:
            old = locked.session
            if old is None:
                raise NotFound("There is no such session.")
            await locked.save(new)
            if frees_places(old, new):
                for key in await locked.waitlisted():
                    await _promote(locked, key, await locked.places(key), new.capacity)
        return new

    async def _co_facilitators(self, room: Room, lead: UserId, value: object) -> list[UserId]:
        """The accounts of the member ids given, staff members of the room, in the order
        given, without the lead or repeats."""
        if not isinstance(value, list) or not all(isinstance(v, str) and len(v) <= MAX_ID for v in value):
            raise BadRequest("`co_facilitators` must be a list of member ids.")
        if len(value) > MAX_CO_FACILITATORS:
            raise BadRequest(f"A session has at most {MAX_CO_FACILITATORS} co-facilitators.")
        chosen: list[UserId] = []
        for member_id in dict.fromkeys(value):
            user_id = await self.members.account(room.community, member_id)
            if user_id == lead or user_id in chosen:
                continue
            user = None if user_id is None else await self.directory.get_user(user_id)
            if user is None:
                raise BadRequest("Co-facilitators must be staff members of this room.")
            require_co_facilitator(user.role, await self.directory.member_role(room.id, user.id))
            chosen.append(user.id)
        return chosen

    # Occurrences

    async def occurrences(
        self, permit: Permit, start: datetime | None, end: datetime | None
    ) -> list[tuple[Occurrence, Attendance]]:
        """The occurrences starting in [start, end), from now and for DEFAULT_WINDOW when not
        given, each with its attendance as the permit's user sees it."""
        start = self.clock() if start is None else start
        end = min(start + DEFAULT_WINDOW, LATEST) if end is None else end
        check_window(start, end)
        found = await self.store.occurrences(permit.session, start, end)
        attendance = await self.store.attendance(permit.session.id, [o.key for o in found], permit.user.id)
        return [(o, attendance[o.key]) for o in found]

    async def cancel(self, permit: Permit, key: datetime, *, reason: object = None) -> tuple[Occurrence, Attendance]:
        """Cancel the occurrence `key` (again changes nothing); it stays listed, cancelled."""
        _need(permit, Action.MANAGE)
        return await self._change(permit, key, cancel=True, reason=check_reason(reason))

    async def move(
        self, permit: Permit, key: datetime, *, start: object, reason: object = None
    ) -> tuple[Occurrence, Attendance]:
        """Move the occurrence `key` to the local time `start`; it keeps its key and places."""
        _need(permit, Action.MANAGE)
        moved_to = parse_local(start, "start")
        return await self._change(permit, key, moved_to=moved_to, reason=check_reason(reason))

    async def _change(
        self, permit: Permit, key: datetime, *, cancel: bool = False, moved_to: datetime | None = None,
        reason: str | None = None,
    ) -> tuple[Occurrence, Attendance]:  # fmt: skip
        async with self.store.session_locked(permit.session.id) as locked:
            session, occurrence = _found(locked, key)
            change = changed(
                session, occurrence, locked.changes.get(key), self.clock(), cancel=cancel, moved_to=moved_to,
                reason=reason,
            )  # fmt: skip
            if change is not None:
                await locked.save_change(change, permit.user.id)
                occurrence = _found(locked, key)[1]
        attendance = await self.store.attendance(permit.session.id, [key], permit.user.id)
        return occurrence, attendance[key]

    # Registration

    async def register(self, permit: Permit, key: datetime) -> tuple[Registration, bool]:
        """A place for the permit's user, or one on the waitlist when the occurrence is full;
        and whether it is new (asking again answers with the place they hold)."""
        _need(permit, Action.REGISTER)
        user = permit.user.id
        async with self.store.session_locked(permit.session.id) as locked:
            session, occurrence = _found(locked, key)
            check_registrable(occurrence, self.clock())
            places = await locked.places(key)
            held = standing(places, user)
            if held is not None:
                return held, False
            status = newcomer(places, session.capacity)
            await locked.add_place(key, user, status)
        place = standing([*places, Place(user, status)], user)
        assert place is not None
        return place, True

    async def unregister(self, permit: Permit, key: datetime) -> None:
        """Give up a place, or one on the waitlist (holding none is fine); the first waiting
        takes a place that frees."""
        user = permit.user.id
        async with self.store.session_locked(permit.session.id) as locked:
            session, occurrence = _found(locked, key)
            check_changeable(occurrence, self.clock())
            places = await locked.places(key)
            if standing(places, user) is not None:
                await locked.remove_place(key, user)
            await _promote(locked, key, [p for p in places if p.user != user], session.capacity)

    # Calendars

    async def room_feed(self, user: User, room_id: RoomId) -> tuple[Room, list[FeedEntry]]:
        """The room, and its sessions' occurrences from FEED_PAST ago to FEED_AHEAD from now."""
        room, _ = await self._visible_room(user, room_id)
        start = self.clock() - FEED_PAST
        entries: list[FeedEntry] = []
        for session in await self.store.list_room(room.id) if room.kind is RoomKind.GROUP else []:
            for occurrence in await self.store.occurrences(session, start, start + FEED_PAST + FEED_AHEAD):
                entries.append((session, occurrence, None))
        return room, entries

    async def my_feed(self, user: User) -> list[FeedEntry]:
        """The occurrences `user` holds a place for, from FEED_PAST ago to FEED_AHEAD from now,
        in rooms they may still see."""
        start = self.clock() - FEED_PAST
        entries: list[FeedEntry] = []
        visible: dict[RoomId, bool] = {}
        for session, occurrence, status in await self.store.registrations_of(
            user.id, start, start + FEED_PAST + FEED_AHEAD
        ):
            if session.room not in visible:
                room = await self.directory.get_room(session.room)
                visible[session.room] = room is not None and allowed(Op.ROOM_ENTER, await self._standing(user, room))
            if visible[session.room]:
                entries.append((session, occurrence, status))
        return entries


def _need(permit: Permit, action: Action) -> None:
    """Fail closed on a permit for another action (a caller that skipped asking for this one)."""
    if permit.action is not action:
        raise Forbidden(REFUSALS[_OPS[action]])


def _found(locked: LockedSession, key: datetime) -> tuple[Session, Occurrence]:
    if locked.session is None:
        raise NotFound("There is no such session.")
    occurrence = locked.session.occurrence(key, locked.changes)
    if occurrence is None:
        raise NotFound("This session has no occurrence at that time.")
    return locked.session, occurrence


async def _promote(locked: LockedSession, key: datetime, places: list[Place], capacity: int | None) -> None:
    """Give the places that are free to the first waiting for them."""
    lucky = promoted(places, capacity)
    if lucky:
        await locked.promote(key, lucky)
