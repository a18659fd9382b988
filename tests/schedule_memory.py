"""The schedule's ports in memory: `MemorySchedule` (a `ScheduleStore`) and `MemoryDirectory`
(the part of a `Directory` the schedule service reads, and how tests fill it).

Real implementations, not mocks: `session_locked` serialises blocks per session with a lock
of its own, and a block works on a copy of its session's state, put back only when the block
exits cleanly, so a block that raises leaves nothing behind, as a rolled-back transaction.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from rooms.errors import Conflict
from rooms.model import MemberRole, Role, Room, RoomId, RoomKind, User, UserId
from rooms.ports import ScheduleStore
from rooms.schedule import Change, Occurrence, Session, SessionId
from rooms.schedule_rules import REGISTERED, WAITLISTED, Attendance, Place, Status

Places = dict[datetime, list[Place]]  # an occurrence's places, in the order they were asked for


class MemorySchedule:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.sessions: dict[SessionId, Session] = {}  # in the order they were created
        self.changes: dict[SessionId, dict[datetime, Change]] = defaultdict(dict)
        self.places: dict[SessionId, Places] = defaultdict(dict)
        self._locks: dict[SessionId, asyncio.Lock] = defaultdict(asyncio.Lock)

    def new_id(self) -> SessionId:
        return SessionId(f"s_memory{next(self._ids)}")

    async def create(self, session: Session, creator: UserId) -> None:
        if session.id in self.sessions:
            raise Conflict("That session exists.")
        self.sessions[session.id] = session

    async def get(self, session_id: SessionId) -> Session | None:
        return self.sessions.get(session_id)

    async def list_room(self, room: RoomId) -> list[Session]:
        return [s for s in self.sessions.values() if s.room == room]

    async def occurrences(self, session: Session, start: datetime, end: datetime) -> list[Occurrence]:
        return session.occurrences(start, end, self.changes[session.id])

    async def occurrences_between(self, start: datetime, end: datetime) -> list[Occurrence]:
        found = [o for s in self.sessions.values() for o in s.occurrences(start, end, self.changes[s.id])]
        return sorted(found, key=lambda o: (o.start, o.session, o.key))

    async def registered(self, session_id: SessionId, key: datetime) -> list[UserId]:
        return [p.user for p in self.places[session_id].get(key, []) if p.status == REGISTERED]

    async def attendance(
        self, session_id: SessionId, keys: Sequence[datetime], user: UserId
    ) -> dict[datetime, Attendance]:
        found = {}
        for key in keys:
            places = self.places[session_id].get(key, [])
            mine = next((p.status for p in places if p.user == user), None)
            found[key] = Attendance(
                sum(p.status == REGISTERED for p in places), sum(p.status == WAITLISTED for p in places), mine
            )
        return found

    async def registrations_of(
        self, user: UserId, start: datetime, end: datetime
    ) -> list[tuple[Session, Occurrence, Status]]:
        found = []
        for session_id, by_key in self.places.items():
            session = self.sessions[session_id]
            for key, places in by_key.items():
                occurrence = session.occurrence(key, self.changes[session_id])
                for place in places:
                    if place.user == user and occurrence is not None and start <= occurrence.start < end:
                        found.append((session, occurrence, place.status))
        return found

    @asynccontextmanager
    async def session_locked(self, session_id: SessionId) -> AsyncIterator[MemoryLockedSession]:
        async with self._locks[session_id]:
            locked = MemoryLockedSession(
                self.sessions.get(session_id),
                dict(self.changes[session_id]),
                {key: list(places) for key, places in self.places[session_id].items()},
            )
            yield locked
            if locked.session is not None:  # the block exited cleanly: its writes take effect
                self.sessions[session_id] = locked.session
                self.changes[session_id] = locked.changes
                self.places[session_id] = {key: places for key, places in locked.all_places.items() if places}


class MemoryLockedSession:
    def __init__(self, session: Session | None, changes: dict[datetime, Change], places: Places) -> None:
        self.session = session
        self.changes = changes
        self.all_places = places

    async def places(self, key: datetime) -> list[Place]:
        return list(self.all_places.get(key, []))

    async def waitlisted(self) -> list[datetime]:
        return [key for key, places in self.all_places.items() if any(p.status == WAITLISTED for p in places)]

    async def add_place(self, key: datetime, user: UserId, status: Status) -> None:
        places = self.all_places.setdefault(key, [])
        if any(p.user == user for p in places):
            raise Conflict("That place is taken.")  # as the primary key refuses it
        places.append(Place(user, status))

    async def remove_place(self, key: datetime, user: UserId) -> None:
        self.all_places[key] = [p for p in self.all_places.get(key, []) if p.user != user]

    async def promote(self, key: datetime, users: Sequence[UserId]) -> None:
        chosen = set(users)
        self.all_places[key] = [
            Place(p.user, REGISTERED) if p.user in chosen else p for p in self.all_places.get(key, [])
        ]

    async def save(self, session: Session) -> None:
        self.session = session

    async def save_change(self, change: Change, actor: UserId) -> None:
        self.changes[change.key] = change


_: type[ScheduleStore] = MemorySchedule


class MemoryDirectory:
    """Users, rooms and membership, as far as the schedule service reads them."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.users: dict[UserId, User] = {}
        self.rooms: dict[RoomId, Room] = {}
        self.members: dict[tuple[RoomId, UserId], MemberRole] = {}

    async def get_user(self, user: UserId) -> User | None:
        return self.users.get(user)

    async def get_room(self, room: RoomId) -> Room | None:
        return self.rooms.get(room)

    async def member_role(self, room: RoomId, user: UserId) -> MemberRole | None:
        return self.members.get((room, user))

    async def rooms_for(self, user: User) -> list[Room]:
        return [r for r in self.rooms.values() if r.kind is RoomKind.DROP_IN or (r.id, user.id) in self.members]

    async def create_user(self, username: str, name: str, role: Role, password_hash: str) -> User:
        user = User(UserId(f"u_memory{next(self._ids)}"), username, name, role)
        self.users[user.id] = user
        return user

    async def create_room(self, name: str, kind: RoomKind, creator: User) -> Room:
        room = Room(RoomId(f"r_memory{next(self._ids)}"), name, kind)
        self.rooms[room.id] = room
        self.members[(room.id, creator.id)] = MemberRole.FACILITATOR
        return room

    async def set_open_hours(self, room: RoomId, hours: Mapping[str, Any] | None) -> None:
        self.rooms[room] = Room(room, self.rooms[room].name, self.rooms[room].kind, hours)

    async def add_member(self, room: RoomId, user: UserId, role: MemberRole) -> bool:
        changed = self.members.get((room, user)) is not role
        self.members[(room, user)] = role
        return changed
