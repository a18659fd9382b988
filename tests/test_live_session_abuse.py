"""A live session under attack by one of its own members: storms of joins, leaves and toggles,
a lobby that must not tell on who waited, moderation aimed at staff or at nobody, and texts
over their limits."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from server.settings import Settings
from tests.conftest import Account, Api, Client, Running, open_client, record_figure, serving, test_settings

USER_RATE, USER_BURST = 2.0, 10.0  # the attacker's bucket of durable events in the storm tests


def _storm_settings(tmp_path: Path) -> Settings:
    """A small bucket of durable events per user, and a connection rate that lets a storm through
    to it (the per-connection bucket is not what is under test)."""
    return test_settings(tmp_path, rate=1000.0, burst=1000.0, user_rate=USER_RATE, user_burst=USER_BURST)


async def _group(api: Api, people: int) -> tuple[str, Account, list[Account]]:
    facilitator = await api.staff()
    room = await api.room(facilitator, kind="group", name="Thursday circle")
    members = [await api.signup() for _ in range(people)]
    for member in members:
        assert (await api.add_member(facilitator, room, member)).status_code == 201
    return room, facilitator, members


async def _connect(running: Running, clients: list[Client], account: Account) -> Client:
    client = await open_client(running, account)
    clients.append(client)
    return client


async def _session_event(client: Client, room: str, action: str, **match: Any) -> dict[str, Any]:
    while True:
        event = await client.event("session", room=room)
        if event["action"] == action and all(event.get(k) == v for k, v in match.items()):
            return event


async def _events_after(client: Client, room: str, after: int) -> list[dict[str, Any]]:
    """Every durable event of the room past `after` that `client` may see, oldest first."""
    found: list[dict[str, Any]] = []
    before = None
    while True:
        args: dict[str, Any] = {"room": room, "limit": 100}
        if before is not None:
            args["before"] = before
        page = (await client.call("history", **args))["events"]
        found[:0] = [e for e in page if e["seq"] > after]
        if not page or page[0]["seq"] <= after:
            return found
        before = page[0]["seq"]


async def _latest_seq(client: Client, room: str) -> int:
    events = (await client.call("history", room=room, limit=1))["events"]
    return int(events[-1]["seq"]) if events else 0


async def test_who_left_the_lobby_or_was_removed_from_it_is_told_to_the_facilitators_alone(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """`left_lobby`, and the removal of someone still waiting, reach the facilitators and the
    user, never the members in the session nor the others waiting."""
    room, fac, (inside, waiting, leaver, removed) = await _group(api, 4)
    cf, ci = await _connect(server, clients, fac), await _connect(server, clients, inside)
    for c in (cf, ci):
        await c.call("join", room=room)
    opened = await cf.call("session", room=room, action="open", title="Circle")
    cw, cl, cr = [await _connect(server, clients, a) for a in (waiting, leaver, removed)]
    for c, account in ((cw, waiting), (cl, leaver), (cr, removed)):
        assert (await c.call("join", room=room))["waiting"] is True
        await _session_event(cf, room, "waiting", user=account.member)
    await cl.call("leave", room=room)
    assert (await _session_event(cf, room, "left_lobby"))["user"] == leaver.member
    await cf.call("remove", room=room, user=removed.member)
    assert (await _session_event(cf, room, "removed"))["user"] == removed.member
    await cf.call("session", room=room, action="pin", kind="agenda", text="Check-in first.")
    for c in (ci, cw):  # the pin is the first thing they hear of after the opening
        while (event := await c.event("session", room=room))["action"] in ("opened", "waiting"):
            pass
        assert event["action"] == "pinned", event
    seen = await _events_after(ci, room, opened["seq"])
    assert [e["action"] for e in seen if e.get("user") in (leaver.member, removed.member)] == []


async def test_a_join_and_leave_storm_in_an_open_lobby_commits_no_more_than_the_users_bucket(
    tmp_path: Path, clients: list[Client]
) -> None:
    """Three sockets of one member join and leave an open lobby as fast as they can: joins past
    the bucket get rate_limited, the events committed stay within it, and no ghost waits."""
    async with serving(_storm_settings(tmp_path)) as (running, api):
        room, fac, (attacker,) = await _group(api, 1)
        cf = await _connect(running, clients, fac)
        await cf.call("join", room=room)
        opened = await cf.call("session", room=room, action="open", title="Circle")
        sockets = [await _connect(running, clients, attacker) for _ in range(3)]
        refused: list[dict[str, Any]] = []
        started = time.monotonic()
        for i in range(60):
            socket = sockets[i % 3]
            reply = await socket.request("join", room=room)
            if "error" in reply:
                refused.append(reply["error"])
            else:
                assert reply["result"]["waiting"] is True
                await socket.call("leave", room=room)
        elapsed = time.monotonic() - started
        committed = [e for e in await _events_after(cf, room, opened["seq"]) if e.get("user") == attacker.member]
        record_figure("lobby join/leave storm", "session events from 60 join+leave rounds", len(committed), "events")
        assert refused and {e["code"] for e in refused} == {"rate_limited"}
        assert all(e["retry_after"] > 0 for e in refused)
        assert len(committed) <= USER_BURST + USER_RATE * elapsed + 2
        assert {e["action"] for e in committed} == {"waiting", "left_lobby"}
        assert (await cf.call("join", room=room))["session"]["waiting"] == []  # every arrival left again


async def test_an_attendance_storm_by_a_member_in_the_session_commits_no_more_than_their_bucket(
    tmp_path: Path, clients: list[Client]
) -> None:
    """A member in the session joining and leaving again and again makes attendance events:
    their joins are charged for them, and refused with rate_limited past the bucket."""
    async with serving(_storm_settings(tmp_path)) as (running, api):
        room, fac, (member,) = await _group(api, 1)
        cf, cm = await _connect(running, clients, fac), await _connect(running, clients, member)
        for c in (cf, cm):
            await c.call("join", room=room)
        opened = await cf.call("session", room=room, action="open", title="Circle")
        await cm.call("leave", room=room)
        refused: list[dict[str, Any]] = []
        started = time.monotonic()
        for _ in range(40):
            reply = await cm.request("join", room=room)
            if "error" in reply:
                refused.append(reply["error"])
            else:
                assert reply["result"]["waiting"] is False
                await cm.call("leave", room=room)
        elapsed = time.monotonic() - started
        attendance = [e for e in await _events_after(cf, room, opened["seq"]) if e["action"] == "attendance"]
        record_figure("attendance storm", "attendance events from 40 leave+join rounds", len(attendance), "events")
        assert refused and {e["code"] for e in refused} == {"rate_limited"}
        assert len(attendance) <= 1 + USER_BURST + USER_RATE * elapsed + 2  # (1: the first leave, uncharged)


async def test_a_join_storm_into_a_locked_lobby_is_rate_limited_after_the_burst(
    tmp_path: Path, clients: list[Client]
) -> None:
    """Joins refused by a locked lobby are checked in the session's turn, so they cost a token
    each: past the bucket they get rate_limited, and the facilitator's commands still pass."""
    async with serving(_storm_settings(tmp_path)) as (running, api):
        room, fac, (attacker,) = await _group(api, 1)
        cf, ca = await _connect(running, clients, fac), await _connect(running, clients, attacker)
        await cf.call("join", room=room)
        await cf.call("session", room=room, action="open", title="Circle")
        await cf.call("session", room=room, action="lock")
        codes = [(await ca.error("join", room=room))["code"] for _ in range(30)]
        assert codes[0] == "forbidden" and codes[-1] == "rate_limited"
        assert codes.count("forbidden") <= USER_BURST + 2
        assert (await cf.call("session", room=room, action="unlock"))["seq"] > 0


async def test_hand_toggling_is_charged_to_the_users_bucket(tmp_path: Path, clients: list[Client]) -> None:
    """Raising and lowering a hand as fast as possible gets rate_limited once the bucket is empty."""
    async with serving(_storm_settings(tmp_path)) as (running, api):
        room, fac, (member,) = await _group(api, 1)
        cf, cm = await _connect(running, clients, fac), await _connect(running, clients, member)
        for c in (cf, cm):
            await c.call("join", room=room)
        opened = await cf.call("session", room=room, action="open", title="Circle")
        started = time.monotonic()
        replies = [await cm.request("hand", room=room, up=i % 2 == 0) for i in range(30)]
        elapsed = time.monotonic() - started
        hands = [e for e in await _events_after(cf, room, opened["seq"]) if e["action"] == "hand"]
        assert {r["error"]["code"] for r in replies if "error" in r} <= {"rate_limited", "conflict"}
        assert any(r.get("error", {}).get("code") == "rate_limited" for r in replies)
        assert len(hands) <= USER_BURST + USER_RATE * elapsed + 1


async def test_staff_cannot_be_removed_or_muted_and_unknown_people_are_not_found(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """The session's lead cannot remove or mute an admin or another room facilitator, and naming
    someone who is neither in the session nor waiting is not_found; none of it commits."""
    room, lead, (member,) = await _group(api, 1)
    colleague, admin = await api.staff(), await api.staff("admin")
    r = await api.http.post(
        f"/api/rooms/{room}/members",
        json={"user": colleague.id, "role": "facilitator"},
        headers={"Authorization": f"Bearer {lead.token}"},
    )
    assert r.status_code == 201
    cl, cc, ca, cm = [await _connect(server, clients, a) for a in (lead, colleague, admin, member)]
    for c in (cl, cc, ca, cm):
        await c.call("join", room=room)
    await cl.call("session", room=room, action="open", title="Circle")
    await cl.call("session", room=room, action="start")
    before = await _latest_seq(cl, room)
    for staff in (admin, colleague):
        assert (await cl.error("remove", room=room, user=staff.member))["code"] == "forbidden"
        assert (await cl.error("mute", room=room, user=staff.member))["code"] == "forbidden"
    for nobody in ("m_000000000000", member.id):  # no such member; an account id names no one in a session
        for op, args in (
            ("remove", {}),
            ("mute", {}),
            ("admit", {}),
            ("deny", {}),
            ("floor", {"action": "give"}),
            ("session", {"action": "lead"}),
            ("knock", {"text": "Hello?"}),
        ):
            assert (await cl.error(op, room=room, user=nobody, **args))["code"] == "not_found", (op, nobody)
    assert await _latest_seq(cl, room) == before
    assert (await ca.call("send", room=room, text="still here", client_id="a1"))["seq"] > before


async def test_session_texts_over_their_limits_are_too_large_and_wrong_types_bad_request(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Every text of the session commands answers too_large past its limit (docs §6) and
    bad_request for a wrong type, and commits nothing."""
    room, fac, (p1, p2) = await _group(api, 2)
    cf, c1 = await _connect(server, clients, fac), await _connect(server, clients, p1)
    for c in (cf, c1):
        await c.call("join", room=room)
    before = await _latest_seq(cf, room)

    def opening(**args: Any) -> dict[str, Any]:
        return {"room": room, "action": "open", **args}

    for args, code in (
        (opening(agreement="a" * 2001), "too_large"),
        (opening(agreement="a" * 5000), "too_large"),
        (opening(title="t" * 81), "too_large"),
        (opening(title="t" * 201), "too_large"),
        (opening(agreement=7), "bad_request"),
        (opening(title=["Circle"]), "bad_request"),
        (opening(co_facilitators=[f"m_{i}" for i in range(11)]), "bad_request"),
        (opening(co_facilitators=["m" * 65]), "bad_request"),
        (opening(co_facilitators=[p1.member]), "bad_request"),  # not a facilitator of the room
        (opening(co_facilitators=["m_000000000000"]), "bad_request"),  # nobody here
    ):
        assert (await cf.error("session", **args))["code"] == code, (args, code)
    assert await _latest_seq(cf, room) == before
    await cf.call("session", **opening(agreement="a" * 2000, title="t" * 80))
    c2 = await _connect(server, clients, p2)
    assert (await c2.call("join", room=room))["waiting"] is True
    await cf.call("session", room=room, action="start")
    await cf.call("checkin", room=room, action="start")
    before = await _latest_seq(cf, room)
    for client, op, args, code in (
        (cf, "session", {"action": "pin", "kind": "agenda", "text": "p" * 2001}, "too_large"),
        (cf, "session", {"action": "pin", "kind": "agenda", "text": "p" * 4001}, "too_large"),
        (cf, "session", {"action": "pin", "kind": "agenda", "text": None}, "bad_request"),
        (cf, "deny", {"user": p2.member, "message": "m" * 501}, "too_large"),
        (cf, "deny", {"user": p2.member, "message": "m" * 2001}, "too_large"),
        (cf, "deny", {"user": p2.member, "message": 5}, "bad_request"),
        (c2, "knock", {"text": "k" * 1001}, "too_large"),
        (c2, "knock", {"text": {"k": 1}}, "bad_request"),
        (c1, "checkin", {"mood": 3, "word": "w" * 41}, "too_large"),
        (c1, "checkin", {"mood": 3, "word": "w" * 201}, "too_large"),
        (c1, "checkin", {"pass": True, "word": "w" * 201}, "too_large"),
        (c1, "checkin", {"mood": 3, "word": 3}, "bad_request"),
    ):
        assert (await client.error(op, room=room, **args))["code"] == code, (op, args, code)
    assert await _latest_seq(cf, room) == before
