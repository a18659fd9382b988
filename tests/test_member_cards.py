"""Inside a community a person is their member card: nothing a peer receives, on the socket
or over HTTP, names an account (`u_…`) or a username, and one account's cards in two
communities share nothing a peer could link."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.settings import normalise_db_url
from tests.conftest import JSON, MSGPACK, Account, Api, Client, Running, auth, open_client, start_server, test_settings

ACCOUNT_ID = re.compile(rb"u_[0-9a-f]{12}")


def leaks(raw: bytes, people: Iterable[Account]) -> set[str]:
    """What in one encoded frame or HTTP body names an account: any account id, and the
    account id or username of any of `people` (usernames whatever their case)."""
    found = {match.decode() for match in ACCOUNT_ID.findall(raw)}
    lowered = raw.lower()
    for person in people:
        found |= {s for s in (person.id, person.username) if s.lower().encode() in lowered}
    return found


async def peer(running: Running, account: Account, encoding: str) -> Client:
    """A client signed in as `account` that keeps every frame after its own `auth` reply
    (which describes the account to itself, and is checked to name it: the scan can see)."""
    client = await open_client(running, None, encoding)
    client.on_wire = []
    await client.call("auth", token=account.token)
    [own] = client.on_wire
    assert account.id in leaks(own, [account])
    client.on_wire.clear()
    return client


async def session_event(client: Client, room: str, action: str, **match: Any) -> dict[str, Any]:
    while True:
        event = await client.event("session", room=room)
        if event["action"] == action and all(event.get(k) == v for k, v in match.items()):
            return event


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path, server: Running) -> AsyncIterator[Running]:
    """The shared server on SQLite, or a server of the test's own on PostgreSQL."""
    if request.param == "sqlite":
        yield server
        return
    url = normalise_db_url(request.getfixturevalue("postgres_url"))
    running = await start_server(test_settings(tmp_path, rate=2000.0, burst=2000.0).with_(database_url=url))
    yield running
    await running.stop()


@pytest.fixture
async def store_api(any_store: Running) -> AsyncIterator[Api]:
    api = Api(any_store)
    yield api
    await api.aclose()


async def test_a_whole_session_shows_peers_member_cards_and_never_an_account(
    any_store: Running, store_api: Api, clients: list[Client]
) -> None:
    """A facilitator and a co-facilitating clinician run a live session of a group room with
    three patients and a caregiver, on JSON and MessagePack sockets: the lobby, a knock,
    admissions, hands, a reordered queue, a timed floor passed on, a mute, a pin, the lead
    handed over and back, a check-in round, messages edited and reacted to, typing, a
    removal, a departure, the end, and a resume from the start; and the schedule, its
    occurrences, a registration and the room list over HTTP. Every frame each patient and
    the caregiver received, and every HTTP answer they got, is scanned as encoded: no
    account id and no username of anyone is in it."""
    running, api = any_store, store_api
    fac, clin = await api.staff(join=False), await api.staff("clinician", join=False)
    await api.join(fac, name="Maya")  # names of their own: not their usernames, which the scan looks for
    await api.join(clin, name="Dr Lee")
    ari, kim, jo = [await api.signup(name=name) for name in ("Ari", "Kim", "Jo")]
    sam = await api.signup("caregiver", name="Sam")
    everyone = [fac, clin, ari, kim, jo, sam]
    peers = [ari, kim, jo, sam]
    room = await api.room(fac, kind="group", name="Thursday circle")
    assert (await api.add_member(fac, room, clin, role="facilitator")).status_code == 201
    for person in peers:
        assert (await api.add_member(fac, room, person)).status_code == 201
    answers: dict[str, list[bytes]] = {p.member: [] for p in peers}  # HTTP bodies each peer got

    async def http(person: Account, method: str, url: str, **kwargs: Any) -> httpx.Response:
        r = await api.http.request(method, url, headers=auth(person), **kwargs)
        assert r.status_code < 300, (url, r.text)
        answers[person.member].append(r.content)
        return r

    # The schedule, over HTTP.
    start = (datetime.now(UTC) + timedelta(days=9)).strftime("%Y-%m-%dT19:00")
    body = {"title": "Thursday circle", "start": start, "tz": "UTC", "duration_minutes": 60, "rrule": "FREQ=WEEKLY",
            "co_facilitators": [clin.member]}  # fmt: skip
    r = await api.http.post(f"/api/rooms/{room}/sessions", json=body, headers=auth(fac))
    assert r.status_code == 201, r.text
    scheduled = r.json()["session"]
    assert scheduled["facilitators"] == [fac.member, clin.member]
    for person in peers:
        await http(person, "GET", "/api/rooms")
        listed = (await http(person, "GET", f"/api/rooms/{room}/sessions")).json()["sessions"]
        assert listed[0]["facilitators"] == [fac.member, clin.member]
        found = (await http(person, "GET", f"/api/sessions/{scheduled['id']}/occurrences")).json()["occurrences"]
        key = found[0]["key"]
        await http(person, "POST", f"/api/sessions/{scheduled['id']}/occurrences/{key}/registration")
        await http(person, "GET", f"/api/sessions/{scheduled['id']}/occurrences")
        await http(person, "GET", f"/api/rooms/{room}/calendar.ics")

    # The live session, on the sockets.
    cf, cclin = await open_client(running, fac), await open_client(running, clin)
    c_ari, c_kim = await peer(running, ari, JSON), await peer(running, kim, MSGPACK)
    c_jo, c_sam = await peer(running, jo, JSON), await peer(running, sam, MSGPACK)
    clients += [cf, cclin, c_ari, c_kim, c_jo, c_sam]
    by_member = {p.member: c for p, c in zip(peers, (c_ari, c_kim, c_jo, c_sam), strict=True)}
    for c in (cf, cclin, c_ari):  # in the room when the session opens: in it at once
        await c.call("join", room=room)
    await cf.call("session", room=room, action="open", title="Thursday circle", co_facilitators=[clin.member])
    opened = await session_event(c_ari, room, "opened")
    assert opened["facilitators"] == [fac.member, clin.member] and ari.member in opened["present"]
    for c in (c_kim, c_jo, c_sam):
        joined = await c.call("join", room=room)
        assert joined["waiting"] is True
    await c_sam.call("knock", room=room, text="Is it all right if I only listen tonight?")
    await session_event(cf, room, "knock", user=sam.member)
    await cf.call("knock", room=room, user=sam.member, text="Of course, Sam. Welcome.")
    await cf.call("admit", room=room, user=sam.member)
    await cf.call("admit", room=room)  # everyone else waiting
    for c in (c_kim, c_jo, c_sam):
        await session_event(c, room, "admitted")
    await cf.call("session", room=room, action="start")
    await cf.call("session", room=room, action="pin", kind="agenda", text="Check-in, then open sharing.")

    for c in (c_kim, c_ari, c_sam):
        await c.call("hand", room=room, up=True)
    await cf.call("floor", room=room, action="order", order=[ari.member, kim.member, sam.member])
    await cf.call("session", room=room, action="floor_only", on=True)
    await cf.call("floor", room=room, action="give", user=ari.member, seconds=60)
    await c_ari.call("send", room=room, text="I slept better this week.", client_id="share-1")
    assert (await c_kim.until("floor_time", room=room))["user"] == ari.member
    await c_ari.call("floor", room=room, action="pass")
    await session_event(c_jo, room, "floor", reason="passed", user=kim.member)
    await cf.call("session", room=room, action="floor_only", on=False)
    await cf.call("mute", room=room, user=jo.member, muted=True)
    assert (await c_jo.error("send", room=room, text="hello?", client_id="muted"))["code"] == "forbidden"
    await cf.call("mute", room=room, user=jo.member, muted=False)
    await cf.call("session", room=room, action="lead", user=clin.member)
    await cclin.call("session", room=room, action="lead", user=fac.member)

    await cf.call("checkin", room=room, action="start")
    order = (await session_event(c_ari, room, "checkin", step="started"))["order"]
    assert set(order) >= {p.member for p in peers}
    for member in order:
        client = by_member.get(member) or (cf if member == fac.member else cclin)
        await client.call("checkin", room=room, mood=3, word="tired")
    await session_event(c_ari, room, "checkin", step="ended")

    sent = await c_ari.call("send", room=room, text="Thank you all.", client_id="thanks")
    await c_ari.call("edit", room=room, target=sent["seq"], text="Thank you all, truly.")
    await c_sam.call("react", room=room, target=sent["seq"], emoji="💛", client_id="r1")
    await c_kim.call("send", room=room, text="Likewise.", client_id="likewise", reply_to=sent["seq"])
    await c_ari.call("typing", room=room)
    assert (await c_sam.until("typing", room=room))["user"] == {"id": ari.member, "name": "Ari", "role": "patient"}
    await c_sam.call("typing", room=room)
    await c_ari.until("typing", room=room)

    await cf.call("remove", room=room, user=jo.member)
    assert (await session_event(c_jo, room, "removed"))["user"] == jo.member
    assert await c_jo.close_code() == 4403
    await c_sam.call("leave", room=room)
    await cf.call("session", room=room, action="end")
    await session_event(c_ari, room, "ended")
    report = await cf.call("attendance", room=room)
    assert {a["user"] for a in report["attendees"]} >= {p.member for p in peers}
    for c in (c_ari, c_kim):  # a resume from the start and a page of history replay it all
        await c.call("join", room=room, since=0)
        await c.call("history", room=room, limit=100)

    # What each of them received: every kind of frame the session makes, and nothing of an account.
    seen = {e["action"] for e in c_ari.seen("session", room=room)}
    assert seen >= {"opened", "admitted", "started", "pinned", "hand", "queue", "floor", "floor_only", "muted",
                    "lead", "checkin", "removed", "ended"}  # fmt: skip
    kinds = {e["ev"] for c in (c_ari, c_kim, c_jo, c_sam) for e in c.seen(room=room)}
    assert kinds >= {"message", "edit", "reaction", "presence", "typing", "floor_time"}
    for person, client in zip(peers, (c_ari, c_kim, c_jo, c_sam), strict=True):
        assert client.on_wire is not None and len(client.on_wire) > 20, person.name
        for frame in [*client.on_wire, *answers[person.member]]:
            assert not leaks(frame, everyone), (person.name, frame[:300])


async def test_one_account_in_two_communities_has_two_cards_that_peers_cannot_link(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Robin is a member of two communities, as "Robin" in one and "Kestrel" in the other,
    and talks and types in a room of each on one socket. A peer in each community sees the
    card of that community only: neither the other member id, nor the other name, nor the
    account id or username comes to them, on the socket or in the list of communities."""
    first = await api.community()
    admin = await api.staff("admin", join=False)
    r = await api.http.post("/api/communities", json={"name": "Carers", "join": "open"}, headers=auth(admin))
    assert r.status_code == 201, r.text
    second = r.json()["community"]["id"]
    robin = await api.signup(name="Robin")
    kestrel = await api.join(robin, second, "Kestrel")
    assert kestrel.startswith("m_") and robin.member.startswith("m_") and kestrel != robin.member
    here, there = await api.signup(name="Wren"), await api.signup(join=False)
    there_member = await api.join(there, second, "Heron")
    host_here, host_there = await api.staff(join=False), await api.staff(join=False)
    await api.join(host_here, name="Host")
    await api.join(host_there, second, "Host")
    room_here = await api.room(host_here, name="Night owls")
    room_there = await api.room(host_there, name="Carers' drop-in", community=second)

    robin_c = await open_client(server, robin)
    c_here, c_there = await peer(server, here, JSON), await peer(server, there, MSGPACK)
    clients += [robin_c, c_here, c_there]
    await c_here.call("join", room=room_here)
    await c_there.call("join", room=room_there)
    joined_here = await robin_c.call("join", room=room_here)
    joined_there = await robin_c.call("join", room=room_there)
    assert joined_here["member"] == {"id": robin.member, "name": "Robin", "role": "patient"}
    assert joined_there["member"] == {"id": kestrel, "name": "Kestrel", "role": "patient"}
    for room, text in ((room_here, "Evening, owls."), (room_there, "Long day with Mum.")):
        await robin_c.call("send", room=room, text=text, client_id=f"hello-{room}")
        await robin_c.call("typing", room=room)
    got_here = await c_here.event("message", room=room_here)
    got_there = await c_there.event("message", room=room_there)
    assert got_here["from"] == joined_here["member"] and got_there["from"] == joined_there["member"]
    await c_here.until("typing", room=room_here)
    await c_there.until("typing", room=room_there)
    bodies = {}
    for person, own in ((here, here.member), (there, there_member)):
        r = await api.http.get("/api/communities", headers=auth(person))
        assert r.status_code == 200
        bodies[person.username] = r.content
        assert [c["member"]["id"] for c in r.json()["communities"] if c["member"]] == [own]  # their own card alone

    # Each peer saw Robin as that community's card, and nothing of the other.
    for client, body, card, other in (
        (c_here, bodies[here.username], (robin.member, b"Robin"), (kestrel, b"Kestrel")),
        (c_there, bodies[there.username], (kestrel, b"Kestrel"), (robin.member, b"Robin")),
    ):
        assert client.on_wire is not None
        frames = b"\n".join(client.on_wire)
        assert card[0].encode() in frames and card[1] in frames  # the scan reads what they got
        for raw in [*client.on_wire, body]:
            assert not leaks(raw, [robin, here, there, host_here, host_there]), raw[:300]
            assert other[0].encode() not in raw and other[1] not in raw, raw[:300]
    assert first != second
