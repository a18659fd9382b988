"""The permission matrix as docs/protocol.md prints it, against a real server: every
operation tried as every kind of person, and allowed exactly where the printed table says.

The expected answers come from the docs, never from `rooms.permissions`: a change to the
matrix alone fails here until the docs say the same (and the docs must print what the
matrix is: `test_the_protocol_prints_the_matrix_the_server_has`).

One world of people is made for the whole file; each operation then makes the room or
session it needs, and tries it as each of the seven kinds of person in turn.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from rooms.permissions import render
from tests.conftest import Account, Api, Client, Running, auth, open_client, serving, test_settings

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


# The table, as the docs print it


def docs_table() -> list[str]:
    """The lines of the first table under the heading that ends in "Permissions"."""
    lines = DOCS.read_text(encoding="utf-8").splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("#") and line.endswith("Permissions"))
    after = itertools.dropwhile(lambda line: not line.startswith("|"), lines[heading + 1 :])
    return list(itertools.takewhile(lambda line: line.startswith("|"), after))


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def docs_matrix() -> tuple[list[str], dict[str, frozenset[str]]]:
    """The columns (kinds of person), and for each operation the columns that say yes."""
    header, _, *rows = docs_table()
    columns = _cells(header)[2:]
    matrix: dict[str, frozenset[str]] = {}
    for line in rows:
        name, _, *marks = _cells(line)
        assert len(marks) == len(columns) and set(marks) <= {"yes", "—"}, line
        matrix[name] = frozenset(c for c, mark in zip(columns, marks, strict=True) if mark == "yes")
    return columns, matrix


COLUMNS, MATRIX = docs_matrix()

# The kinds of person tried, and the columns each holds where the operation happens: a room
# facilitator is a facilitator too, and the session's facilitator also one of the room's.
PEOPLE: dict[str, frozenset[str]] = {
    "patient": frozenset({"patient"}),
    "caregiver": frozenset({"caregiver"}),
    "facilitator": frozenset({"facilitator"}),
    "clinician": frozenset({"clinician"}),
    "admin": frozenset({"admin"}),
    "room facilitator": frozenset({"facilitator", "room facilitator"}),
    "session facilitator": frozenset({"facilitator", "room facilitator", "session facilitator"}),
}


def test_the_protocol_prints_the_matrix_the_server_has() -> None:
    assert "\n".join(docs_table()) == render(), "docs/protocol.md §7a must print rooms.permissions.render()"


def test_every_column_is_a_kind_of_person_tried_and_every_operation_is_tried() -> None:
    assert COLUMNS == list(PEOPLE)
    assert set(ROWS) == set(MATRIX)


# The people


_n = itertools.count()


@dataclass
class Person:
    account: Account
    client: Client | None
    cards: dict[str, str] = field(default_factory=dict)  # community id → member id

    @property
    def ws(self) -> Client:
        assert self.client is not None
        return self.client

    @property
    def id(self) -> str:
        return self.account.id


@dataclass
class World:
    """Two open communities: `a` for rooms and sessions, `b` for what is done to a
    community itself (its agreement, bans). The seven kinds of person are members of both,
    but the admin of `a` only (its card there is needed; in `b` it acts as a non-member, as
    admins may). `lead` makes the rooms and runs their sessions, `root` is an admin who
    helps; neither is one of the people tried. In a group room made by `room`, the admin
    is nobody but an admin."""

    server: Running
    api: Api
    a: str
    b: str
    people: dict[str, Person]
    lead: Person
    root: Person
    opened: list[Client] = field(default_factory=list)

    async def person(self, role: str = "patient", communities: Sequence[str] = (), *, client: bool = True) -> Person:
        if role in ("patient", "caregiver"):
            account = await self.api.signup(role, join=False)
        else:
            account = await self.api.staff(role, join=False)
        person = Person(account, None)
        for community in communities:
            person.cards[community] = await self.api.join(account, community)
        if client:
            person.client = await open_client(self.server, account)
            self.opened.append(person.client)
        return person

    async def call(self, method: str, path: str, who: Person, body: Any = None) -> httpx.Response:
        return await self.api.http.request(method, path, json=body, headers=auth(who.account))

    async def room(self, kind: str = "group", members: Sequence[Person] = ()) -> str:
        """A room of `a` made by `lead`; the room and session facilitators are its
        facilitators, and in a group the four roles and `members` are its members."""
        r = await self.call(
            "POST", "/api/rooms", self.lead, {"name": f"Room {next(_n)}", "kind": kind, "community": self.a}
        )
        assert r.status_code == 201, r.text
        room: str = r.json()["room"]["id"]
        added = [(self.people[k], "facilitator") for k in ("room facilitator", "session facilitator")]
        if kind == "group":
            added += [(self.people[k], "member") for k in ("patient", "caregiver", "facilitator", "clinician")]
            added += [(p, "member") for p in members]
        for person, role in added:
            r = await self.call(
                "POST", f"/api/rooms/{room}/members", self.lead, {"member": person.cards[self.a], "role": role}
            )
            assert r.status_code == 201, r.text
        return room

    async def enter(self, room: str, people: Sequence[Person]) -> None:
        """`people` join `room`, and are present there once this returns."""
        for person in people:
            await person.ws.call("join", room=room)
        for person in people:
            await person.ws.call("ping")  # after the join's own work: commands run in turn

    async def schedule(self, room: str, **fields: Any) -> dict[str, Any]:
        """A weekly session of `room`, led by `lead`, its first occurrence a week ahead."""
        start = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT19:00")
        body = {"title": "Circle", "start": start, "tz": "UTC", "duration_minutes": 60, "rrule": "FREQ=WEEKLY"}
        r = await self.call("POST", f"/api/rooms/{room}/sessions", self.lead, {**body, **fields})
        assert r.status_code == 201, r.text
        session: dict[str, Any] = r.json()["session"]
        r = await self.call("GET", f"/api/sessions/{session['id']}/occurrences", self.lead)
        assert r.status_code == 200, r.text
        session["keys"] = [o["key"] for o in r.json()["occurrences"]]
        return session

    def kinds(self) -> list[tuple[str, Person]]:
        return list(self.people.items())


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """A server of the file's own (its communities would be more than the shared server's
    tests expect), and the world's people on it."""
    settings = test_settings(tmp_path_factory.mktemp("permissions"), rate=2000.0, burst=2000.0)
    async with serving(settings) as (server, api):
        root = Person(await api.staff("admin", join=False), None)
        communities = []
        for name in ("Permissions A", "Permissions B"):
            r = await api.http.post("/api/communities", json={"name": name, "join": "open"}, headers=auth(root.account))
            assert r.status_code == 201, r.text
            communities.append(r.json()["community"]["id"])
        a, b = communities
        w = World(server, api, a, b, {}, root, root)
        try:
            for kind in PEOPLE:
                role = "facilitator" if kind.endswith("facilitator") else kind
                w.people[kind] = await w.person(role, [a] if kind == "admin" else [a, b])
            w.lead = await w.person("facilitator", [a, b])
            yield w
        finally:
            for client in w.opened:
                await client.close()


# What an answer says


def http_allowed(r: httpx.Response) -> bool:
    """Refused: 403 `forbidden`; allowed: done (2xx). Anything else is a broken probe."""
    if r.status_code == 403 and r.json()["error"]["code"] == "forbidden":
        return False
    assert r.is_success, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
    return True


def ws_allowed(reply: dict[str, Any], refusal: str = "forbidden", message: str | None = None) -> bool:
    """Refused: the error `refusal` (with `message`, when given); allowed: a result."""
    error = reply.get("error")
    if error is not None and error["code"] == refusal and message in (None, error["message"]):
        return False
    assert "result" in reply, reply
    return True


Tried = dict[str, dict[str, bool]]  # kind of person → what was tried → allowed
ROWS: dict[str, Callable[[World], Awaitable[Tried]]] = {}


def row(operation: str) -> Callable[[Callable[[World], Awaitable[Tried]]], Callable[[World], Awaitable[Tried]]]:
    def register(probe: Callable[[World], Awaitable[Tried]]) -> Callable[[World], Awaitable[Tried]]:
        ROWS[operation] = probe
        return probe

    return register


@pytest.mark.parametrize("operation", list(MATRIX))
async def test_each_operation_is_allowed_exactly_where_the_docs_say(world: World, operation: str) -> None:
    tried = await ROWS[operation](world)
    wrong = [
        f"{kind}: {what} was {'allowed' if done else 'refused'}"
        for kind, held in PEOPLE.items()
        for what, done in tried[kind].items()
        if done == MATRIX[operation].isdisjoint(held)
    ]
    assert tried.keys() == PEOPLE.keys() and all(tried.values())
    assert not wrong, f"{operation!r} against the docs' table: " + "; ".join(wrong)


# Communities


@row("create a community")
async def _create_community(w: World) -> Tried:
    body = lambda: {"name": f"Circle {next(_n)}", "join": "open"}  # noqa: E731
    return {
        kind: {"create": http_allowed(await w.call("POST", "/api/communities", p, body()))} for kind, p in w.kinds()
    }


@row("add an account to a community")
async def _invite(w: World) -> Tried:
    tried: Tried = {}
    for kind, p in w.kinds():
        newcomer = await w.person(communities=(), client=False)
        body = {"user": newcomer.id, "display_name": newcomer.account.name}
        tried[kind] = {"add": http_allowed(await w.call("POST", f"/api/communities/{w.b}/members", p, body))}
    return tried


@row("read a member's account")
async def _member_account(w: World) -> Tried:
    path = f"/api/communities/{w.b}/members/{w.people['patient'].cards[w.b]}"
    return {kind: {"read": http_allowed(await w.call("GET", path, p))} for kind, p in w.kinds()}


@row("set the group agreement")
async def _agreement(w: World) -> Tried:
    path = f"/api/communities/{w.b}/agreement"
    return {
        kind: {"set": http_allowed(await w.call("PUT", path, p, {"text": f"Be kind ({kind})."}))}
        for kind, p in w.kinds()
    }


@row("ban a member, or lift a ban")
async def _ban(w: World) -> Tried:
    tried: Tried = {}
    for kind, p in w.kinds():
        target = (await w.person(communities=[w.b], client=False)).cards[w.b]
        banned = http_allowed(
            await w.call("POST", f"/api/communities/{w.b}/bans", p, {"member": target, "reason": "A test."})
        )
        if not banned:
            r = await w.call("POST", f"/api/communities/{w.b}/bans", w.root, {"member": target, "reason": "A test."})
            assert r.status_code == 201, r.text
        lifted = http_allowed(await w.call("DELETE", f"/api/communities/{w.b}/bans/{target}", p))
        tried[kind] = {"ban": banned, "lift": lifted}
    return tried


@row("ban a member of staff, or lift their ban")
async def _ban_staff(w: World) -> Tried:
    tried: Tried = {}
    for kind, p in w.kinds():
        target = (await w.person("clinician", communities=[w.b], client=False)).cards[w.b]
        banned = http_allowed(
            await w.call("POST", f"/api/communities/{w.b}/bans", p, {"member": target, "reason": "A test."})
        )
        if not banned:
            r = await w.call("POST", f"/api/communities/{w.b}/bans", w.root, {"member": target, "reason": "A test."})
            assert r.status_code == 201, r.text
        lifted = http_allowed(await w.call("DELETE", f"/api/communities/{w.b}/bans/{target}", p))
        tried[kind] = {"ban": banned, "lift": lifted}
    return tried


@row("see and handle the safety queue")
async def _cases(w: World) -> Tried:
    room = await w.room(kind="drop_in")
    await w.lead.ws.call("join", room=room)
    tried: Tried = {}
    for kind, p in w.kinds():
        sent = await w.lead.ws.call("send", room=room, text=f"Note {next(_n)}", client_id=f"c{next(_n)}")
        case = (await w.lead.ws.call("report", room=room, seq=sent["seq"], reason="A test."))["case"]
        seen = http_allowed(await w.call("GET", f"/api/communities/{w.a}/cases", p))
        acted = http_allowed(await w.call("POST", f"/api/cases/{case}", p, {"action": "ack"}))
        tried[kind] = {"see": seen, "act": acted}
    return tried


@row("redact someone's message")
async def _redact(w: World) -> Tried:
    room = await w.room("group")
    await w.lead.ws.call("join", room=room)
    tried: Tried = {}
    for kind, p in w.kinds():
        await p.ws.call("join", room=room)
        sent = await w.lead.ws.call("send", room=room, text=f"Note {next(_n)}", client_id=f"c{next(_n)}")
        reply = await p.ws.request("redact", room=room, target=sent["seq"], reason="A test.")
        tried[kind] = {"redact": ws_allowed(reply)}
        await p.ws.call("leave", room=room)
    return tried


@row("read the audit log")
async def _audit(w: World) -> Tried:
    path = f"/api/audit?community={w.b}"
    return {kind: {"read": http_allowed(await w.call("GET", path, p))} for kind, p in w.kinds()}


@row("set a room's slow mode, suspend it")
async def _moderate_room(w: World) -> Tried:
    room = await w.room("group")
    return {
        kind: {"slow mode": http_allowed(await w.call("PATCH", f"/api/rooms/{room}", p, {"slow_mode": 5}))}
        for kind, p in w.kinds()
    }


@row("mute a member in the community, or lift it")
async def _community_mute(w: World) -> Tried:
    tried: Tried = {}
    for kind, p in w.kinds():
        target = (await w.person(communities=[w.b], client=False)).cards[w.b]
        body = {"member": target, "minutes": 10, "reason": "A test."}
        muted = http_allowed(await w.call("POST", f"/api/communities/{w.b}/mutes", p, body))
        if not muted:
            r = await w.call("POST", f"/api/communities/{w.b}/mutes", w.root, body)
            assert r.status_code == 201, r.text
        lifted = http_allowed(await w.call("DELETE", f"/api/communities/{w.b}/mutes/{target}", p))
        tried[kind] = {"mute": muted, "lift": lifted}
    return tried


@row("set the crisis resources")
async def _crisis_resources(w: World) -> Tried:
    body = {"resources": [{"title": "Call for help", "text": "Call 112, day or night."}]}
    path = f"/api/communities/{w.b}/resources/crisis"
    return {kind: {"set": http_allowed(await w.call("PUT", path, p, body))} for kind, p in w.kinds()}


# Rooms


@row("create a room")
async def _create_room(w: World) -> Tried:
    tried: Tried = {}
    for kind, p in w.kinds():
        body = {"name": f"Room {next(_n)}", "kind": "drop_in", "community": w.a}
        tried[kind] = {"create": http_allowed(await w.call("POST", "/api/rooms", p, body))}
    return tried


@row("join a group room, see its sessions")
async def _enter(w: World) -> Tried:
    room = await w.room()
    session = await w.schedule(room)
    tried: Tried = {}
    for kind, p in w.kinds():
        joined = ws_allowed(await p.ws.request("join", room=room))
        if joined:
            await p.ws.call("leave", room=room)
        tried[kind] = {
            "join": joined,
            "sessions": http_allowed(await w.call("GET", f"/api/rooms/{room}/sessions", p)),
            "occurrences": http_allowed(await w.call("GET", f"/api/sessions/{session['id']}/occurrences", p)),
            "calendar": http_allowed(await w.call("GET", f"/api/rooms/{room}/calendar.ics", p)),
        }
    return tried


@row("add a room member")
async def _add_member(w: World) -> Tried:
    room = await w.room()
    tried: Tried = {}
    for kind, p in w.kinds():
        newcomer = await w.person(communities=[w.a], client=False)
        body = {"member": newcomer.cards[w.a]}
        tried[kind] = {"add": http_allowed(await w.call("POST", f"/api/rooms/{room}/members", p, body))}
    return tried


@row("change a room's open hours")
async def _open_hours(w: World) -> Tried:
    room = await w.room("drop_in")
    hours = {"tz": "Europe/London", "days": [0, 1, 2, 3, 4], "from": "20:00", "to": "02:00"}
    return {
        kind: {"set": http_allowed(await w.call("PATCH", f"/api/rooms/{room}", p, {"open_hours": hours}))}
        for kind, p in w.kinds()
    }


@row("join on duty")
async def _on_duty(w: World) -> Tried:
    room = await w.room("drop_in")
    tried: Tried = {}
    for kind, p in w.kinds():
        reply = await p.ws.request("join", room=room, on_duty=True)
        if on_duty := ws_allowed(reply):
            assert next(c for c in reply["result"]["presence"] if c["name"] == p.account.name)["on_duty"] is True
            await p.ws.call("leave", room=room)
        tried[kind] = {"join on duty": on_duty}
    return tried


@row("join as the room's facilitator")
async def _facilitate(w: World) -> Tried:
    """Joining while a session is open: a facilitator goes straight in and sees who waits;
    anyone else waits in the lobby."""
    room = await w.room()
    await w.enter(room, [w.lead])
    await w.lead.ws.call(
        "session", room=room, action="open", co_facilitators=[w.people["session facilitator"].cards[w.a]]
    )
    tried: Tried = {}
    for kind, p in w.kinds():
        joined = await p.ws.call("join", room=room)
        facilitating = not joined["waiting"]
        assert facilitating == ("waiting" in joined["session"]), joined  # the facilitators' view
        await p.ws.call("leave", room=room)
        tried[kind] = {"join": facilitating}
    return tried


# Scheduled sessions


@row("schedule a session")
async def _schedule(w: World) -> Tried:
    room = await w.room()
    start = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT19:00")
    body = {"title": "Circle", "start": start, "tz": "UTC", "duration_minutes": 60}
    return {
        kind: {"schedule": http_allowed(await w.call("POST", f"/api/rooms/{room}/sessions", p, body))}
        for kind, p in w.kinds()
    }


@row("change, cancel or move a session")
async def _manage(w: World) -> Tried:
    room = await w.room()
    session = await w.schedule(room, co_facilitators=[w.people["session facilitator"].cards[w.a]])
    url = f"/api/sessions/{session['id']}"
    cancelled, moved = session["keys"][:2]
    tried: Tried = {}
    for i, (kind, p) in enumerate(w.kinds()):
        moved_to = datetime.fromisoformat(moved.replace("Z", "+00:00")) + timedelta(hours=1, minutes=i)
        tried[kind] = {
            "change": http_allowed(await w.call("PATCH", url, p, {"title": f"Circle {i}"})),
            "cancel": http_allowed(await w.call("POST", f"{url}/occurrences/{cancelled}/cancel", p, {})),
            "move": http_allowed(
                await w.call(
                    "POST", f"{url}/occurrences/{moved}/move", p, {"start": moved_to.strftime("%Y-%m-%dT%H:%M")}
                )
            ),
        }
    return tried


@row("register for a session")
async def _register(w: World) -> Tried:
    room = await w.room()
    session = await w.schedule(room, co_facilitators=[w.people["session facilitator"].cards[w.a]])
    url = f"/api/sessions/{session['id']}/occurrences/{session['keys'][0]}/registration"
    return {kind: {"register": http_allowed(await w.call("POST", url, p))} for kind, p in w.kinds()}


# Live sessions


@dataclass
class Live:
    """A group room whose people are all present in it, with `lead` to open its sessions
    (the session facilitator as co-facilitator) and `member`, a patient, present too."""

    w: World
    room: str
    member: Person
    open: bool = False

    @classmethod
    async def make(cls, w: World, *others: Person) -> Live:
        member = await w.person(communities=[w.a])
        room = await w.room(members=[member, *others])
        await w.enter(room, [w.lead, member, *(p for _, p in w.kinds())])
        return cls(w, room, member)

    async def lead(self, op: str, **args: Any) -> dict[str, Any]:
        return await self.w.lead.ws.call(op, room=self.room, **args)

    async def reset(self, *, start: bool = False) -> None:
        """A fresh session, with whoever is present in it: in its lobby, or live."""
        if self.open:
            await self.lead("session", action="end")
        co = [self.w.people["session facilitator"].cards[self.w.a]]
        await self.lead("session", action="open", title="Circle", co_facilitators=co)
        self.open = True
        if start:
            await self.lead("session", action="start")

    def card(self, person: Person) -> str:
        return person.cards[self.w.a]


async def _waiting(live: Live, *people: Person) -> None:
    for person in people:
        assert (await person.ws.call("join", room=live.room))["waiting"] is True


async def _leave(live: Live, *people: Person) -> None:
    for person in people:
        await person.ws.call("leave", room=live.room)


@row("open a live session")
async def _open(w: World) -> Tried:
    live = await Live.make(w)
    tried: Tried = {}
    for kind, p in w.kinds():
        opened = ws_allowed(await p.ws.request("session", room=live.room, action="open", title="Mine"))
        if opened:
            await p.ws.call("session", room=live.room, action="end")
        tried[kind] = {"open": opened}
    return tried


@row("run a live session")
async def _run(w: World) -> Tried:
    live = await Live.make(w)
    successor = live.card(w.people["session facilitator"])
    tried: Tried = {}
    for kind, p in w.kinds():
        await live.reset()
        ask = partial(p.ws.request, "session", room=live.room)
        tried[kind] = {
            "start": ws_allowed(await ask(action="start")),
            "lock": ws_allowed(await ask(action="lock")),
            "unlock": ws_allowed(await ask(action="unlock")),
            "floor_only": ws_allowed(await ask(action="floor_only", on=True)),
            "pin": ws_allowed(await ask(action="pin", kind="agenda", text="Check-in, then sharing.")),
            "lead": ws_allowed(await ask(action="lead", user=successor)),
            "end": ws_allowed(await ask(action="end")),
        }
        live.open = not tried[kind]["end"]
    return tried


@row("admit or deny someone waiting")
async def _lobby(w: World) -> Tried:
    late, later = await w.person(communities=[w.a]), await w.person(communities=[w.a])
    live = await Live.make(w, late, later)
    tried: Tried = {}
    for kind, p in w.kinds():
        await live.reset()
        await _waiting(live, late, later)
        tried[kind] = {
            "admit": ws_allowed(await p.ws.request("admit", room=live.room, user=live.card(late))),
            "deny": ws_allowed(await p.ws.request("deny", room=live.room, user=live.card(later), message="Not today.")),
        }
        await _leave(live, late, later)
    return tried


@row("answer a knock")
async def _knock(w: World) -> Tried:
    """Without the right, a knock is one's own: `conflict` for someone who is not waiting."""
    late = await w.person(communities=[w.a])
    live = await Live.make(w, late)
    tried: Tried = {}
    for kind, p in w.kinds():
        await live.reset()
        await _waiting(live, late)
        reply = await p.ws.request("knock", room=live.room, user=live.card(late), text="Welcome, come in soon.")
        tried[kind] = {"answer": ws_allowed(reply, "conflict", "Knocking is for members waiting in the lobby.")}
        await _leave(live, late)
    return tried


@row("give, take back or order the floor")
async def _floor(w: World) -> Tried:
    live = await Live.make(w)
    tried: Tried = {}
    for kind, p in w.kinds():
        await live.reset(start=True)
        ask = partial(p.ws.request, "floor", room=live.room)
        tried[kind] = {
            "give": ws_allowed(await ask(action="give", user=live.card(live.member))),
            "take": ws_allowed(await ask(action="take")),
            "order": ws_allowed(await ask(action="order", order=[])),
        }
    return tried


@row("mute or unmute someone")
async def _mute(w: World) -> Tried:
    live = await Live.make(w)
    await live.reset()
    tried: Tried = {}
    for kind, p in w.kinds():
        tried[kind] = {
            "mute": ws_allowed(await p.ws.request("mute", room=live.room, user=live.card(live.member), muted=True)),
            "unmute": ws_allowed(await p.ws.request("mute", room=live.room, user=live.card(live.member), muted=False)),
        }
    return tried


@row("remove someone from the session")
async def _remove(w: World) -> Tried:
    targets = {kind: await w.person(communities=[w.a]) for kind in PEOPLE}
    live = await Live.make(w, *targets.values())
    tried: Tried = {}
    for kind, p in w.kinds():
        target = targets[kind]
        await w.enter(live.room, [target])
        await live.reset()  # with the target in it
        tried[kind] = {"remove": ws_allowed(await p.ws.request("remove", room=live.room, user=live.card(target)))}
        if tried[kind]["remove"]:
            assert await target.ws.close_code() == 4403
    return tried


@row("start a check-in round")
async def _checkin(w: World) -> Tried:
    live = await Live.make(w)
    tried: Tried = {}
    for kind, p in w.kinds():
        await live.reset(start=True)
        tried[kind] = {"start": ws_allowed(await p.ws.request("checkin", room=live.room, action="start"))}
    return tried


@row("skip someone's check-in turn")
async def _skip(w: World) -> Tried:
    """Answering while it is someone else's turn: a skip, or, without the right, `conflict`."""
    live = await Live.make(w)
    tried: Tried = {}
    for kind, p in w.kinds():
        await live.reset(start=True)
        started = await live.lead("checkin", action="start")
        seq = started["seq"]
        event = await w.lead.ws.until("session", room=live.room, where=lambda e, seq=seq: e.get("seq") == seq)
        if event["order"][0] == live.card(p):  # their own turn first: then it is someone else's
            await p.ws.call("checkin", room=live.room, mood=3)
        reply = await p.ws.request("checkin", room=live.room, mood=4)
        tried[kind] = {"answer out of turn": ws_allowed(reply, "conflict", "It is not your turn.")}
    return tried


@row("post while waiting, muted or without the floor")
async def _post(w: World) -> Tried:
    live = await Live.make(w)
    tried: Tried = {}
    for kind, p in w.kinds():
        await live.reset(start=True)
        await live.lead("session", action="floor_only", on=True)
        await live.lead("floor", action="give", user=live.card(live.member))
        reply = await p.ws.request("send", room=live.room, text="May I say something?", client_id=f"c{next(_n)}")
        tried[kind] = {"send without the floor": ws_allowed(reply)}
    return tried


@row("see attendance")
async def _attendance(w: World) -> Tried:
    live = await Live.make(w)
    await live.reset()
    return {kind: {"attendance": ws_allowed(await p.ws.request("attendance", room=live.room))} for kind, p in w.kinds()}


# Where a role counts


async def test_a_role_counts_only_where_the_account_is_a_member_and_an_admin_everywhere(world: World) -> None:
    """A facilitator of one community is nobody in another; an invite-only community is
    joined uninvited by admins alone."""
    w = world
    staff_elsewhere = await w.person("facilitator", [w.a], client=False)
    r = await w.call("GET", f"/api/communities/{w.b}/members/{w.people['patient'].cards[w.b]}", staff_elsewhere)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = await w.call("POST", "/api/communities", w.root, {"name": "By invitation", "join": "invite"})
    invite_only = r.json()["community"]["id"]
    for kind in ("patient", "facilitator", "clinician", "admin"):
        p = w.people[kind]
        r = await w.call("POST", f"/api/communities/{invite_only}/members", p, {"display_name": p.account.name})
        assert r.status_code == (201 if kind == "admin" else 403), (kind, r.text)
