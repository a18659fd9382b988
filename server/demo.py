"""`hearth demo`: example users, rooms and a few messages, so a newcomer sees something alive."""

from __future__ import annotations

from rooms.errors import Conflict
from rooms.model import EventKind, MemberRole, NewEvent, Role, RoomKind, User
from server.auth import Accounts
from server.store.directory import SqlDirectory
from server.store.sql import SqlTranscriptStore

DEMO_PASSWORD = "hearth-demo"

PEOPLE = [
    ("maya", "Maya (facilitator)", Role.FACILITATOR),
    ("sam", "Sam", Role.PATIENT),
    ("alex", "Alex", Role.PATIENT),
    ("joan", "Joan", Role.CAREGIVER),
]

GROUP = "Long COVID Thursday group"
DROP_IN = "Caregivers' night drop-in"


async def seed(accounts: Accounts, directory: SqlDirectory, store: SqlTranscriptStore) -> list[str]:
    """Create the demo data once; returns lines describing how to sign in."""
    users: dict[str, User] = {}
    for username, name, role in PEOPLE:
        try:
            users[username] = await accounts.create_user(username, DEMO_PASSWORD, name, role)
        except Conflict:
            found = await directory.find_login(username)
            assert found is not None
            users[username] = found[0]
    if await directory.find_room(GROUP) is None:
        group = await directory.create_room(GROUP, RoomKind.GROUP, users["maya"])
        for name in ("sam", "alex"):
            await directory.add_member(group.id, users[name].id, MemberRole.MEMBER)
        drop_in = await directory.create_room(DROP_IN, RoomKind.DROP_IN, users["maya"])
        lines = [
            (group.id, "maya", "Welcome, everyone. We meet Thursdays at 7pm; this room stays open between."),
            (group.id, "sam", "Hi all. Pacing went better this week."),
            (drop_in.id, "joan", "Anyone up? Long night with Dad again."),
            (drop_in.id, "maya", "I am here, Joan. Take your time."),
        ]
        await store.append(
            [
                NewEvent(room, EventKind.MESSAGE, users[who], {"text": text}, f"demo-{i}")
                for i, (room, who, text) in enumerate(lines)
            ]
        )
    return [f"  {u:5} / {DEMO_PASSWORD}   {name}" for u, name, _ in PEOPLE]
