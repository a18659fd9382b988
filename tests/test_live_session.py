"""A live support-group session, played by a facilitator, three patients and a caregiver."""

from __future__ import annotations

from typing import Any

from tests.conftest import Account, Api, Client, Running, open_client


async def _group(server: Running, api: Api, clients: list[Client], people: int) -> tuple[str, Account, list[Account]]:
    facilitator = await api.staff()
    room = await api.room(facilitator, kind="group", name="Long COVID Thursday")
    members = [await api.signup("caregiver" if i == people - 1 else "patient") for i in range(people)]
    for member in members:
        assert (await api.add_member(facilitator, room, member)).status_code == 201
    return room, facilitator, members


async def _session_event(client: Client, room: str, action: str, **match: Any) -> dict[str, Any]:
    while True:
        event = await client.event("session", room=room)
        if event["action"] == action and all(event.get(k) == v for k, v in match.items()):
            return event


async def test_a_whole_session_from_lobby_to_attendance(server: Running, api: Api, clients: list[Client]) -> None:
    """Lobby, admission, hands in order, a timed floor that yields itself, mute, removal, check-in, end."""
    room, fac, (p1, p2, p3, carer) = await _group(server, api, clients, 4)
    cf = await open_client(server, fac)
    clients.append(cf)
    await cf.call("join", room=room)
    opened = await cf.call(
        "session",
        room=room,
        action="open",
        title="Thursday circle",
        minutes=60,
        agreement="What is said here stays here.",
    )
    assert opened["seq"] == 1

    # The lobby: members wait, see the agreement, and see nothing of the room.
    waiting = {}
    for account in (p1, p2, p3, carer):
        c = await open_client(server, account)
        clients.append(c)
        joined = await c.call("join", room=room)
        assert joined["waiting"] is True and joined["presence"] == []
        assert joined["session"]["agreement"] == "What is said here stays here." and "queue" not in joined["session"]
        assert (await c.error("send", room=room, text="hello?", client_id="early"))["code"] == "forbidden"
        waiting[account.id] = c
        assert (await _session_event(cf, room, "waiting", user=account.id))["card"]["id"] == account.id
    c1, c2, c3, cc = (waiting[a.id] for a in (p1, p2, p3, carer))
    await c1.call("knock", room=room, text="My camera is broken, is that OK?")
    knock = await _session_event(cf, room, "knock")
    assert knock["user"] == p1.id and knock["text"].startswith("My camera")
    await cf.call("knock", room=room, user=p1.id, text="Of course. Welcome.")
    while (answer := await _session_event(c1, room, "knock", user=p1.id))["from"]["id"] != fac.id:
        pass  # their own knock comes back to them first
    assert answer["text"] == "Of course. Welcome."
    await cf.call("admit", room=room, user=p1.id)
    await cf.call("admit", room=room)  # everyone else waiting
    for c in (c1, c2, c3, cc):
        await _session_event(c, room, "admitted")
    await cf.call("session", room=room, action="start")
    await _session_event(c3, room, "started")
    assert (await c1.call("send", room=room, text="Hi all", client_id="hi"))["seq"] > 0
    # The knock chat was private: P2 never saw it, even now that they are in.
    history = (await c2.call("history", room=room, limit=100))["events"]
    assert not [e for e in history if e.get("action") == "knock"]

    # Hands go up in order, the facilitator reorders, gives a timed floor; it yields itself.
    for c in (c2, c1, c3):
        await c.call("hand", room=room, up=True)
    assert (await _session_event(cc, room, "hand", user=p3.id))["up"] is True
    await cf.call("floor", room=room, action="order", order=[p1.id, p2.id, p3.id])
    assert (await _session_event(cc, room, "queue"))["order"] == [p1.id, p2.id, p3.id]
    await cf.call("session", room=room, action="floor_only", on=True)
    given = await cf.call("floor", room=room, action="give", user=p1.id, seconds=5)
    floor = await _session_event(c2, room, "floor", user=p1.id)
    assert floor["seq"] == given["seq"] and floor["until"] > 0
    assert (await c2.error("send", room=room, text="me too", client_id="m2"))["code"] == "forbidden"
    await c1.call("send", room=room, text="I have been sleeping better.", client_id="share")
    tick = await c2.event("floor_time", room=room)
    assert tick["user"] == p1.id and 0 < tick["seconds_left"] <= 5
    yielded = await _session_event(c2, room, "floor", reason="time")
    assert yielded["user"] is None and yielded["from"]["id"] == "hearth"
    assert (await c1.error("send", room=room, text="one more thing", client_id="late"))["code"] == "forbidden"
    await cf.call("floor", room=room, action="give", user=p2.id)
    await c2.call("floor", room=room, action="pass")  # to the next raised hand
    assert (await _session_event(cc, room, "floor", reason="passed"))["user"] == p3.id
    await cf.call("session", room=room, action="floor_only", on=False)

    # Mute and removal are enforced by the server.
    await cf.call("mute", room=room, user=p3.id, muted=True)
    assert "muted" in (await c3.error("send", room=room, text="hey", client_id="x"))["message"]
    await cf.call("mute", room=room, user=p3.id, muted=False)
    await c3.call("send", room=room, text="thanks", client_id="y")
    await cf.call("remove", room=room, user=carer.id)
    assert await cc.close_code() == 4403
    again = await open_client(server, carer)
    clients.append(again)
    assert (await again.error("join", room=room))["code"] == "forbidden"

    # Check-in: the server walks the roster; entries are private; facilitators get the summary.
    started = await cf.call("checkin", room=room, action="start")
    order = (await _session_event(c1, room, "checkin", step="started"))["order"]
    assert sorted(order) == sorted([p1.id, p2.id, p3.id]) and started["seq"] > 0
    answers = {p1.id: {"mood": 4, "word": "hopeful"}, p2.id: {"pass": True}, p3.id: {"mood": 2}}
    by_id = {p1.id: c1, p2.id: c2, p3.id: c3}
    for member in order:
        other = next(c for u, c in by_id.items() if u != member)
        assert (await other.error("checkin", room=room, mood=3))["code"] == "conflict"  # not their turn
        await by_id[member].call("checkin", room=room, **answers[member])
    summary = (await _session_event(cf, room, "checkin", step="ended"))["summary"]
    assert {s["user"]: s.get("mood") for s in summary} == {p1.id: 4, p2.id: None, p3.id: 2}
    assert next(s for s in summary if s["user"] == p2.id)["passed"] is True
    seen_by_p1 = [e for e in (await c1.call("history", room=room, limit=100))["events"] if e.get("step") == "entry"]
    assert [e["user"] for e in seen_by_p1] == [p1.id]  # one's own entry only

    await cf.call("session", room=room, action="end")
    await _session_event(c1, room, "ended")
    report = await cf.call("attendance", room=room)
    assert report["session"]["title"] == "Thursday circle"
    assert {a["user"] for a in report["attendees"]} == {p1.id, p2.id, p3.id, carer.id}
    assert all(a["seconds"] >= 0 for a in report["attendees"])
    assert (await c1.error("attendance", room=room))["code"] == "forbidden"
    assert "text" not in str(report)


async def test_a_reconnect_mid_session_restores_floor_queue_and_mute(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """A member who drops and rejoins with since gets the session state and the changes they missed."""
    room, fac, (p1, p2) = await _group(server, api, clients, 2)
    cf = await open_client(server, fac)
    c1 = await open_client(server, p1)
    c2 = await open_client(server, p2)
    clients += [cf, c1, c2]
    await cf.call("join", room=room)
    await c1.call("join", room=room)  # in the room before the session opens: in it at once
    await cf.call("session", room=room, action="open", title="Circle")
    await c2.call("join", room=room)
    await cf.call("admit", room=room, user=p2.id)
    await cf.call("session", room=room, action="start")
    await c1.call("hand", room=room, up=True)
    seen = (await c2.call("send", room=room, text="before the drop", client_id="b"))["seq"]
    await c2.close()
    await c1.call("hand", room=room, up=False)
    await c1.call("hand", room=room, up=True)
    await cf.call("mute", room=room, user=p2.id, muted=True)
    await cf.call("floor", room=room, action="give", user=p1.id)
    back = await open_client(server, p2)
    clients.append(back)
    joined = await back.call("join", room=room, since=seen)
    assert joined["waiting"] is False
    session = joined["session"]
    assert session["state"] == "live" and session["floor"] == p1.id and session["muted"] == [p2.id]
    assert session["queue"] == []
    assert [e["action"] for e in joined["events"] if e["ev"] == "session"] == ["hand", "hand", "muted", "floor"]
    assert (await back.error("send", room=room, text="still muted?", client_id="m"))["code"] == "forbidden"
