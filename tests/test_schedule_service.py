"""The schedule service in the domain, on the memory ports and a manual clock: permits, reach
in time, the waitlist's rules and what the calendar makes happen."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rooms.communities import CommunityService
from rooms.errors import BadRequest, Conflict, Forbidden, NotFound
from rooms.model import JoinPolicy, Member, MemberRole, Role, Room, RoomId, RoomKind, User, UserId
from rooms.names import name_key
from rooms.schedule import Session, SessionId
from rooms.schedule_rules import Place, Registration, due, newcomer, promoted, standing
from rooms.schedule_service import Action, ScheduleService
from tests.schedule_memory import MemoryAudit, MemoryCommunities, MemoryDirectory, MemorySchedule

FIRST = datetime(2027, 2, 4, 19, tzinfo=UTC)
WEEKLY = {"title": "Thursday circle", "tz": "UTC", "duration_minutes": 60, "start": "2027-02-04T19:00"}


class Clock:
    """A manual clock: a real implementation of the service's `clock`."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    service: ScheduleService
    directory: MemoryDirectory
    communities: MemoryCommunities
    lead: User
    member: User
    admin: User
    outsider: User
    room: Room

    async def card(self, user: User) -> Member:
        """`user`'s member card in the room's community (made when they have none)."""
        found = await self.communities.member_of(self.room.community, user.id)
        if found is not None:
            return found
        return await self.communities.add_member(self.room.community, user, user.name, name_key(user.name))

    async def session(self, **fields: Any) -> Session:
        return await self.service.create(await self.service.permit_scheduling(self.lead, self.room.id), fields)


async def world(clock: Clock) -> World:
    """A group room of a community with its facilitator and a member; an admin and an
    outsider (a member of the community, not of the group) beside it."""
    directory, communities = MemoryDirectory(), MemoryCommunities()
    lead = await directory.create_user("lead", "Lead", Role.FACILITATOR, "x")
    member = await directory.create_user("sam", "Sam", Role.PATIENT, "x")
    admin = await directory.create_user("ada", "Ada", Role.ADMIN, "x")
    outsider = await directory.create_user("olu", "Olu", Role.PATIENT, "x")
    community = await communities.create("Long COVID", JoinPolicy.OPEN, admin.id)
    for user in (lead, member, outsider):
        await communities.add_member(community.id, user, user.name, name_key(user.name))
    room = await directory.create_room("Circle", RoomKind.GROUP, lead, community.id)
    await directory.add_member(room.id, member.id, MemberRole.MEMBER)
    members = CommunityService(communities, MemoryAudit())
    service = ScheduleService(MemorySchedule(), directory, members, clock=clock)
    return World(service, directory, communities, lead, member, admin, outsider, room)


async def test_permits_answer_not_found_then_forbidden_by_the_permission_matrix() -> None:
    """Members register, admins see and manage without registering, outsiders see nothing."""
    w = await world(Clock(datetime(2027, 1, 1, tzinfo=UTC)))
    service, lead, member, admin, outsider, room = w.service, w.lead, w.member, w.admin, w.outsider, w.room
    session = await w.session(**WEEKLY)
    assert (await service.permit(member, session.id, Action.REGISTER)).action is Action.REGISTER
    assert (await service.permit(admin, session.id, Action.MANAGE)).action is Action.MANAGE
    for who, action in ((member, Action.MANAGE), (admin, Action.REGISTER), (outsider, Action.SEE)):
        with pytest.raises(Forbidden):
            await service.permit(who, session.id, action)
    with pytest.raises(NotFound):
        await service.permit(member, SessionId("s_none"), Action.SEE)
    with pytest.raises(Forbidden):
        await service.permit_scheduling(member, room.id)
    drop_in = await w.directory.create_room("Night owls", RoomKind.DROP_IN, lead, room.community)
    with pytest.raises(BadRequest):
        await service.permit_scheduling(lead, drop_in.id)
    with pytest.raises(NotFound):
        await service.permit_scheduling(lead, RoomId("r_none"))


async def test_a_permit_acts_only_for_what_it_was_given() -> None:
    """A permit to see cannot cancel or register: the service fails closed."""
    w = await world(Clock(datetime(2027, 1, 1, tzinfo=UTC)))
    service, session = w.service, await w.session(**WEEKLY)
    seeing = await service.permit(w.lead, session.id, Action.SEE)
    for act in (service.cancel(seeing, FIRST), service.register(seeing, FIRST), service.update(seeing, {})):
        with pytest.raises(Forbidden):
            await act


async def test_places_open_366_days_ahead_and_close_once_the_occurrence_is_over() -> None:
    """400 days ahead: no place, no cancellation (409); over: no place, no leaving, no change."""
    clock = Clock(FIRST - timedelta(days=400))
    w = await world(clock)
    service, session = w.service, await w.session(**WEEKLY)
    register = await service.permit(w.member, session.id, Action.REGISTER)
    manage = await service.permit(w.lead, session.id, Action.MANAGE)
    for act in (service.register(register, FIRST), service.cancel(manage, FIRST)):
        with pytest.raises(Conflict, match="366 days"):
            await act
    await service.unregister(register, FIRST)  # giving up nothing is always possible
    clock.now = FIRST - timedelta(days=1)
    assert (await service.register(register, FIRST))[0].status == "registered"
    with pytest.raises(BadRequest):  # to a time already past
        await service.move(manage, FIRST, start="2026-12-31T10:00")
    with pytest.raises(NotFound):
        await service.register(register, FIRST + timedelta(hours=1))
    clock.now = FIRST + timedelta(hours=1)
    for act in (service.register(register, FIRST), service.unregister(register, FIRST), service.cancel(manage, FIRST)):
        with pytest.raises(Conflict, match="already taken place"):
            await act


def test_a_newcomer_waits_behind_whoever_waits_even_beside_a_free_place() -> None:
    """The waitlist is served first come, first served: a free place is the first waiting's."""
    sam, jo, kim = UserId("sam"), UserId("jo"), UserId("kim")
    places = [Place(sam, "registered"), Place(jo, "waitlisted")]
    assert newcomer(places, 3) == "waitlisted" and newcomer(places[:1], 3) == "registered"
    assert newcomer(places, None) == "registered"
    assert promoted([*places, Place(kim, "waitlisted")], 2) == [jo]
    assert promoted([*places, Place(kim, "waitlisted")], None) == [jo, kim]
    assert promoted([Place(sam, "registered"), Place(jo, "registered"), Place(kim, "waitlisted")], 1) == []
    assert standing([*places, Place(kim, "waitlisted")], kim) == Registration("waitlisted", 2)
    assert standing(places, kim) is None


async def test_the_calendar_makes_each_thing_happen_in_its_own_window() -> None:
    """Reminders before the start, the lobby from its opening to the end, the end after the grace."""
    w = await world(Clock(datetime(2027, 1, 1, tzinfo=UTC)))
    session = await w.session(**WEEKLY, reminder_minutes=30, lobby_minutes=10)
    [occurrence] = await w.service.store.occurrences(session, FIRST, FIRST + timedelta(days=1))
    grace = timedelta(minutes=15)

    def at(minutes: int) -> tuple[bool, bool, bool]:
        what = due(occurrence, FIRST + timedelta(minutes=minutes), end_grace=grace)
        return what.remind, what.open, what.end

    assert at(-31) == (False, False, False)
    assert at(-30) == (True, False, False)
    assert at(-10) == (True, True, False)
    assert at(0) == (False, True, False)
    assert at(60) == (False, False, False)  # over, within the grace
    assert at(76) == (False, False, True)
    assert due(replace(occurrence, cancelled=True), FIRST, end_grace=grace).open is False
    assert due(replace(occurrence, reminder_minutes=0), FIRST - timedelta(minutes=1), end_grace=grace).remind is False


async def test_a_session_names_its_facilitators_by_member_ids_and_stores_their_accounts() -> None:
    """`co_facilitators` are member ids of the room's community, and the session's card shows
    member ids; the store keeps accounts. An account id, another community's member or a
    patient is no co-facilitator. An admin who schedules gets a card there to be shown by."""
    w = await world(Clock(datetime(2027, 1, 1, tzinfo=UTC)))
    service, room = w.service, w.room
    clinician = await w.directory.create_user("cleo", "Cleo", Role.CLINICIAN, "x")
    await w.directory.add_member(room.id, clinician.id, MemberRole.MEMBER)
    co, lead = await w.card(clinician), await w.card(w.lead)
    session = await w.session(**WEEKLY, co_facilitators=[co.id, lead.id, co.id])  # the lead and a repeat: once
    assert session.facilitators == (w.lead.id, clinician.id)
    card = await service.card(room, session)
    assert card["facilitators"] == [lead.id, co.id]
    assert all(u not in str(card) for u in (w.lead.id, clinician.id))
    elsewhere = await w.communities.create("Carers", JoinPolicy.OPEN, w.admin.id)
    other = await w.communities.add_member(elsewhere.id, clinician, "Cleo", name_key("Cleo"))
    manage = await service.permit(w.lead, session.id, Action.MANAGE)
    for refused in ([clinician.id], [other.id], [(await w.card(w.member)).id], ["m_" + "x" * 70], "m_1"):
        with pytest.raises(BadRequest):
            await service.update(manage, {"co_facilitators": refused})
    assert (await service.update(manage, {"co_facilitators": []})).facilitators == (w.lead.id,)
    assert await w.communities.member_of(room.community, w.admin.id) is None
    by_admin = await service.create(await service.permit_scheduling(w.admin, room.id), dict(WEEKLY))
    admin_card = await w.communities.member_of(room.community, w.admin.id)
    assert admin_card is not None and admin_card.name == "Ada"
    assert (await service.card(room, by_admin))["facilitators"] == [admin_card.id]
