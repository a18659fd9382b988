"""`hearth demo`: two communities with their agreements, rooms, members and a few messages,
so a newcomer sees the real shape: the same person under a different name in each."""

from __future__ import annotations

from rooms.errors import Conflict
from rooms.model import Community, EventKind, JoinPolicy, Member, MemberRole, NewEvent, Role, RoomKind, User
from rooms.names import name_key
from server.auth import Accounts
from server.store.communities import SqlCommunities
from server.store.directory import SqlDirectory
from server.store.sql import SqlTranscriptStore

DEMO_PASSWORD = "hearth-demo"

PEOPLE = [
    ("maya", "Maya Okafor", Role.FACILITATOR),
    ("sam", "Sam Reid", Role.PATIENT),
    ("alex", "Alex Moore", Role.PATIENT),
    ("joan", "Joan Baker", Role.CAREGIVER),
]

LONG_COVID = "Long COVID"
CARERS = "Carers of people with dementia"
# (community, how people join, its agreement, its members by username and display name)
COMMUNITIES = [
    (
        LONG_COVID,
        JoinPolicy.OPEN,
        "We keep what is said here in the group. We speak from our own experience and do not "
        "give medical advice. We are kind, including to ourselves on a bad day. In a crisis, "
        "call your local emergency number: this group cannot answer in time.",
        [("maya", "Maya"), ("sam", "Sam R"), ("alex", "Foggy Alex")],
    ),
    (
        CARERS,
        JoinPolicy.INVITE,
        "What carers share here stays here. No names of the people we care for. Advice is "
        "offered, not pushed. Facilitators may pause a conversation that hurts someone.",
        [("maya", "Maya"), ("joan", "Joan"), ("alex", "A. Moore")],
    ),
]
ROOMS = [
    (LONG_COVID, "Long COVID Thursday group", RoomKind.GROUP, ["sam", "alex"]),
    (LONG_COVID, "Long COVID drop-in", RoomKind.DROP_IN, []),
    (CARERS, "Caregivers' night drop-in", RoomKind.DROP_IN, []),
]
LINES = [
    ("Long COVID Thursday group", "maya", "Welcome, everyone. We meet Thursdays at 7pm; this room stays open between."),
    ("Long COVID Thursday group", "sam", "Hi all. Pacing went better this week."),
    ("Caregivers' night drop-in", "joan", "Anyone up? Long night with Dad again."),
    ("Caregivers' night drop-in", "maya", "I am here, Joan. Take your time."),
]


async def seed(
    accounts: Accounts, directory: SqlDirectory, communities: SqlCommunities, store: SqlTranscriptStore
) -> list[str]:
    """Create the demo data once; returns lines describing how to sign in."""
    users: dict[str, User] = {}
    for username, name, role in PEOPLE:
        try:
            users[username] = await accounts.create_user(username, DEMO_PASSWORD, name, role)
        except Conflict:
            found = await directory.find_login(username)
            assert found is not None
            users[username] = found[0]
    if await directory.find_room(ROOMS[0][1]) is None:
        made: dict[str, Community] = {}
        members: dict[tuple[str, str], Member] = {}
        for title, join, agreement, people in COMMUNITIES:
            community = made[title] = await communities.create(title, join, users["maya"].id)
            await communities.set_agreement(community.id, None, agreement, users["maya"].id)
            for username, display_name in people:
                member = await communities.add_member(
                    community.id, users[username], display_name, name_key(display_name)
                )
                members[title, username] = member
        rooms = {}
        for title, name, kind, group in ROOMS:
            room = rooms[name] = await directory.create_room(name, kind, users["maya"], made[title].id)
            for username in group:
                await directory.add_member(room.id, users[username].id, MemberRole.MEMBER)
        community_of = {name: title for title, name, _, _ in ROOMS}
        await store.append(
            [
                NewEvent(
                    rooms[room].id, EventKind.MESSAGE, members[community_of[room], who], {"text": text}, f"demo-{i}"
                )
                for i, (room, who, text) in enumerate(LINES)
            ]
        )
    lines = [f"  {u:5} / {DEMO_PASSWORD}   {role.value}" for u, _, role in PEOPLE]
    return [*lines, f"  communities: {LONG_COVID} (open), {CARERS} (by invitation)"]
