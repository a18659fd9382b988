"""The schedule's ports in memory: `MemorySchedule` (a `ScheduleStore`), `MemoryDirectory`
(the part of a `Directory` the schedule service reads, and how tests fill it), and
`MemoryCommunities` and `MemoryAudit` (who someone is in a community, for the member ids a
schedule shows).

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
from rooms.model import (
    Community,
    CommunityId,
    JoinPolicy,
    Member,
    MemberId,
    MemberRole,
    Role,
    Room,
    RoomId,
    RoomKind,
    User,
    UserId,
)
from rooms.ports import Agreement, AuditLog, Communities, ScheduleStore
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

    async def create_room(self, name: str, kind: RoomKind, creator: User, community: CommunityId) -> Room:
        room = Room(RoomId(f"r_memory{next(self._ids)}"), name, kind, community)
        self.rooms[room.id] = room
        self.members[(room.id, creator.id)] = MemberRole.FACILITATOR
        return room

    async def set_open_hours(self, room: RoomId, hours: Mapping[str, Any] | None) -> None:
        old = self.rooms[room]
        self.rooms[room] = Room(room, old.name, old.kind, old.community, hours)

    async def add_member(self, room: RoomId, user: UserId, role: MemberRole) -> bool:
        changed = self.members.get((room, user)) is not role
        self.members[(room, user)] = role
        return changed


class MemoryCommunities:
    """Communities, members, bans and agreements, in dicts; the same conflicts as the store's
    unique keys (one card per account and community, one name per community)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.communities: dict[CommunityId, Community] = {}
        self.members: dict[MemberId, Member] = {}
        self.keys: dict[MemberId, str] = {}  # each member's name key
        self.bans: set[tuple[CommunityId, UserId]] = set()
        self.agreements: dict[tuple[CommunityId, RoomId | None], list[str]] = defaultdict(list)
        self.acceptances: set[tuple[MemberId, RoomId | None, int]] = set()

    async def create(self, name: str, join: JoinPolicy, creator: UserId) -> Community:
        community = Community(CommunityId(f"c_memory{next(self._ids)}"), name, join)
        self.communities[community.id] = community
        return community

    async def get(self, community: CommunityId) -> Community | None:
        return self.communities.get(community)

    async def only(self) -> Community | None:
        return next(iter(self.communities.values())) if len(self.communities) == 1 else None

    async def listed(self, user: UserId, everything: bool) -> list[tuple[Community, Member | None]]:
        listed = [(c, await self.member_of(c.id, user)) for c in self.communities.values()]
        return [(c, m) for c, m in listed if everything or m is not None or c.join is JoinPolicy.OPEN]

    async def member_of(self, community: CommunityId, user: UserId) -> Member | None:
        return next((m for m in self.members.values() if (m.community, m.account) == (community, user)), None)

    async def member(self, member: MemberId) -> Member | None:
        return self.members.get(member)

    async def add_member(self, community: CommunityId, user: User, name: str, key: str) -> Member:
        if await self.member_of(community, user.id) is not None:
            raise Conflict("You are a member of this community already.")
        self._name_free(community, key)
        member = Member(MemberId(f"m_memory{next(self._ids)}"), community, user.id, name, user.role)
        self.members[member.id], self.keys[member.id] = member, key
        return member

    async def rename(self, member: Member, name: str, key: str) -> Member:
        self._name_free(member.community, key, but=member.id)
        renamed = Member(member.id, member.community, member.account, name, member.role)
        self.members[member.id], self.keys[member.id] = renamed, key
        return renamed

    def _name_free(self, community: CommunityId, key: str, but: MemberId | None = None) -> None:
        if any(m.community == community and self.keys[m.id] == key and m.id != but for m in self.members.values()):
            raise Conflict("That name is taken in this community. Please choose another.")

    async def banned(self, community: CommunityId, user: UserId) -> bool:
        return (community, user) in self.bans

    async def load_bans(self) -> frozenset[tuple[CommunityId, UserId]]:
        return frozenset(self.bans)

    async def recheck_ban(self, community: CommunityId, user: UserId) -> bool:
        return (community, user) in self.bans

    async def ban(self, community: CommunityId, user: UserId, actor: UserId, reason: str) -> bool:
        new = (community, user) not in self.bans
        self.bans.add((community, user))
        return new

    async def unban(self, community: CommunityId, user: UserId) -> bool:
        found = (community, user) in self.bans
        self.bans.discard((community, user))
        return found

    async def agreement(self, community: CommunityId, room: RoomId | None) -> Agreement | None:
        texts = self.agreements[(community, room)]
        return Agreement(community, room, len(texts), texts[-1]) if texts else None

    async def set_agreement(self, community: CommunityId, room: RoomId | None, text: str, actor: UserId) -> Agreement:
        self.agreements[(community, room)].append(text)
        return Agreement(community, room, len(self.agreements[(community, room)]), text)

    async def accepted(self, member: MemberId, agreement: Agreement) -> bool:
        return (member, agreement.room, agreement.version) in self.acceptances

    async def accept(self, member: MemberId, agreement: Agreement) -> None:
        self.acceptances.add((member, agreement.room, agreement.version))

    def forget_all(self) -> None:
        pass  # nothing is remembered beside what is stored

    def forget(self, community: CommunityId, user: UserId | None = None, member: MemberId | None = None) -> None:
        pass


_communities: type[Communities] = MemoryCommunities


class MemoryAudit:
    """The audit log as a list, in the order acts were recorded."""

    def __init__(self) -> None:
        self.entries: list[dict[str, str | None]] = []

    async def record(
        self,
        actor: UserId,
        action: str,
        *,
        community: CommunityId | None = None,
        room: RoomId | None = None,
        target: str | None = None,
        reason: str | None = None,
    ) -> None:
        entry = {"actor": actor, "action": action, "community": community, "room": room, "target": target}
        self.entries.append({**entry, "reason": reason})


_audit: type[AuditLog] = MemoryAudit
