"""The schedule's registrations and waitlists through the service, on every `ScheduleStore`:
in memory, on SQLite and on PostgreSQL, with the same answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rooms.communities import CommunityService
from rooms.errors import Conflict
from rooms.model import JoinPolicy, MemberRole, Role, Room, RoomKind, User
from rooms.ports import AuditLog, Communities, ScheduleStore
from rooms.schedule import Session
from rooms.schedule_rules import REGISTERED, Place, Registration
from rooms.schedule_service import Action, ScheduleService
from server.settings import normalise_db_url
from server.store.communities import SqlAuditLog, SqlCommunities
from server.store.directory import SqlDirectory
from server.store.engine import open_engines
from server.store.migrate import upgrade
from server.store.schedule import SqlSchedule
from tests.schedule_memory import MemoryAudit, MemoryCommunities, MemoryDirectory, MemorySchedule

NOW = datetime(2027, 1, 1, 12, tzinfo=UTC)
FIRST = datetime(2027, 2, 4, 19, tzinfo=UTC)  # a Thursday, the first of a weekly session
SECOND = FIRST + timedelta(days=7)
WEEKLY = {"title": "Thursday circle", "tz": "UTC", "duration_minutes": 60, "start": "2027-02-04T19:00"}
WEEKLY_RULE = {**WEEKLY, "rrule": "FREQ=WEEKLY"}


@dataclass
class World:
    service: ScheduleService
    store: ScheduleStore
    lead: User
    people: list[User]
    room: Room

    async def session(self, **fields: Any) -> Session:
        permit = await self.service.permit_scheduling(self.lead, self.room.id)
        return await self.service.create(permit, fields)

    async def register(self, session: Session, who: User, key: datetime = FIRST) -> tuple[Registration, bool]:
        permit = await self.service.permit(who, session.id, Action.REGISTER)
        return await self.service.register(permit, key)

    async def unregister(self, session: Session, who: User, key: datetime = FIRST) -> None:
        await self.service.unregister(await self.service.permit(who, session.id, Action.SEE), key)

    async def change(self, session: Session, **fields: Any) -> Session:
        return await self.service.update(await self.service.permit(self.lead, session.id, Action.MANAGE), fields)

    async def standing(self, session: Session, key: datetime = FIRST) -> list[tuple[str, str]]:
        """Everyone's place, by person (p0, p1, …), in the order they asked."""
        names = {p.id: f"p{i}" for i, p in enumerate(self.people)}
        async with self.store.session_locked(session.id) as locked:
            return [(names[p.user], p.status) for p in await locked.places(key)]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    engines = None
    store: ScheduleStore
    directory: MemoryDirectory | SqlDirectory
    communities: Communities
    audit: AuditLog
    if request.param == "memory":
        store, directory = MemorySchedule(), MemoryDirectory()
        communities, audit = MemoryCommunities(), MemoryAudit()
    else:
        if request.param == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path / 'hearth.db'}"
        else:
            url = normalise_db_url(request.getfixturevalue("postgres_url"))
        engines = open_engines(url)
        await upgrade(engines)
        store, directory = SqlSchedule(engines), SqlDirectory(engines)
        communities, audit = SqlCommunities(engines), SqlAuditLog(engines)
    lead = await directory.create_user("lead", "Lead", Role.FACILITATOR, "x")
    people = [await directory.create_user(f"p{i}", f"Person {i}", Role.PATIENT, "x") for i in range(10)]
    community = await communities.create("Circle's community", JoinPolicy.OPEN, lead.id)
    room = await directory.create_room("Circle", RoomKind.GROUP, lead, community.id)
    for person in people:
        await directory.add_member(room.id, person.id, MemberRole.MEMBER)
    service = ScheduleService(store, directory, CommunityService(communities, audit), clock=lambda: NOW)
    yield World(service, store, lead, people, room)
    if engines is not None:
        await engines.dispose()


async def test_a_full_occurrence_waitlists_in_order_and_a_freed_place_goes_to_the_first_waiting(world: World) -> None:
    """Capacity 2: the third and fourth wait as 1 and 2; asking again answers the same place;
    when a registered person leaves, the first waiting takes the place and the next moves up."""
    session = await world.session(**WEEKLY, capacity=2)
    p = world.people
    answers = [await world.register(session, person) for person in p[:4]]
    assert answers == [
        (Registration("registered"), True),
        (Registration("registered"), True),
        (Registration("waitlisted", 1), True),
        (Registration("waitlisted", 2), True),
    ]
    assert await world.register(session, p[3]) == (Registration("waitlisted", 2), False)
    await world.unregister(session, p[0])
    assert await world.standing(session) == [("p1", "registered"), ("p2", "registered"), ("p3", "waitlisted")]
    assert await world.register(session, p[3]) == (Registration("waitlisted", 1), False)
    assert await world.store.registered(session.id, FIRST) == [p[1].id, p[2].id]
    attendance = await world.store.attendance(session.id, [FIRST, SECOND], p[3].id)
    assert (attendance[FIRST].registered, attendance[FIRST].waitlisted, attendance[FIRST].mine) == (2, 1, "waitlisted")
    assert (attendance[SECOND].registered, attendance[SECOND].mine) == (0, None)


async def test_leaving_the_waitlist_or_holding_nothing_promotes_nobody(world: World) -> None:
    """A waiting person who leaves moves those behind them up; someone with no place who
    leaves changes nothing."""
    session = await world.session(**WEEKLY, capacity=1)
    p = world.people
    for person in p[:4]:
        await world.register(session, person)
    await world.unregister(session, p[1])
    await world.unregister(session, p[9])
    assert await world.standing(session) == [("p0", "registered"), ("p2", "waitlisted"), ("p3", "waitlisted")]
    assert await world.register(session, p[3]) == (Registration("waitlisted", 2), False)


async def test_a_larger_capacity_promotes_every_occurrences_waitlist_and_none_promotes_everyone(world: World) -> None:
    """Raised by one, each occurrence's first waiting takes the new place; removed, everyone
    waiting has a place; lowered, nobody loses one."""
    session = await world.session(**WEEKLY_RULE, capacity=1)
    p = world.people
    for key in (FIRST, SECOND):
        for person in p[:4]:
            await world.register(session, person, key)
    session = await world.change(session, capacity=2)
    for key in (FIRST, SECOND):
        assert [status for _, status in await world.standing(session, key)] == [
            "registered", "registered", "waitlisted", "waitlisted",
        ]  # fmt: skip
    session = await world.change(session, capacity=1)
    assert [status for _, status in await world.standing(session)].count("registered") == 2
    session = await world.change(session, capacity=None)
    for key in (FIRST, SECOND):
        assert {status for _, status in await world.standing(session, key)} == {REGISTERED}
    assert await world.register(session, p[5]) == (Registration("registered"), True)


async def test_ten_racing_registrations_for_three_places_register_exactly_three(world: World) -> None:
    """Registrations made at once are decided one after the other under the session's lock."""
    session = await world.session(**WEEKLY, capacity=3)
    answers = await asyncio.gather(*(world.register(session, person) for person in world.people))
    assert all(new for _, new in answers)
    places = [place for place, _ in answers]
    assert [place.status for place in places].count("registered") == 3
    assert sorted(place.position for place in places if place.position is not None) == list(range(1, 8))
    attendance = await world.store.attendance(session.id, [FIRST], world.lead.id)
    assert (attendance[FIRST].registered, attendance[FIRST].waitlisted) == (3, 7)


async def test_a_locked_block_that_raises_leaves_nothing_behind(world: World) -> None:
    """Writes made inside `session_locked` take effect only when the block exits cleanly."""
    session = await world.session(**WEEKLY, capacity=5)
    with pytest.raises(Conflict):
        async with world.store.session_locked(session.id) as locked:
            await locked.add_place(FIRST, world.people[0].id, "registered")
            assert await locked.places(FIRST) == [Place(world.people[0].id, "registered")]
            raise Conflict("changed my mind")
    assert await world.standing(session) == []
    async with world.store.session_locked(session.id) as locked:
        assert locked.session == session


async def test_a_cancelled_occurrence_takes_no_registration_and_a_moved_one_keeps_its_places(world: World) -> None:
    """Cancelling keeps the occurrence (flagged) and refuses places; a move keeps key and places."""
    session = await world.session(**WEEKLY_RULE, capacity=2)
    manage = await world.service.permit(world.lead, session.id, Action.MANAGE)
    await world.register(session, world.people[0], SECOND)
    cancelled, _ = await world.service.cancel(manage, FIRST, reason="Snow")
    assert (cancelled.key, cancelled.cancelled, cancelled.reason) == (FIRST, True, "Snow")
    again, _ = await world.service.cancel(manage, FIRST)
    assert again == cancelled  # cancelling again changes nothing, the reason included
    with pytest.raises(Conflict):
        await world.register(session, world.people[1], FIRST)
    moved, attendance = await world.service.move(manage, SECOND, start="2027-02-12T10:00", reason="Holiday")
    assert (moved.key, moved.start, moved.moved) == (SECOND, datetime(2027, 2, 12, 10, tzinfo=UTC), True)
    assert attendance.registered == 1
    found = await world.store.occurrences(session, datetime(2027, 2, 1, tzinfo=UTC), datetime(2027, 2, 15, tzinfo=UTC))
    assert [(o.key, o.start, o.cancelled) for o in found] == [
        (FIRST, FIRST, True), (SECOND, moved.start, False),
    ]  # fmt: skip
    [mine] = await world.store.registrations_of(world.people[0].id, NOW, NOW + timedelta(days=60))
    assert (mine[1], mine[2]) == (moved, "registered")
