"""A live support-group session, played by a facilitator, three patients and a caregiver."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
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
        waiting[account.member] = c
        assert (await _session_event(cf, room, "waiting", user=account.member))["card"]["id"] == account.member
    c1, c2, c3, cc = (waiting[a.member] for a in (p1, p2, p3, carer))
    await c1.call("knock", room=room, text="My camera is broken, is that OK?")
    knock = await _session_event(cf, room, "knock")
    assert knock["user"] == p1.member and knock["text"].startswith("My camera")
    await cf.call("knock", room=room, user=p1.member, text="Of course. Welcome.")
    while (answer := await _session_event(c1, room, "knock", user=p1.member))["from"]["id"] != fac.member:
        pass  # their own knock comes back to them first
    assert answer["text"] == "Of course. Welcome."
    await cf.call("admit", room=room, user=p1.member)
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
    assert (await _session_event(cc, room, "hand", user=p3.member))["up"] is True
    await cf.call("floor", room=room, action="order", order=[p1.member, p2.member, p3.member])
    assert (await _session_event(cc, room, "queue"))["order"] == [p1.member, p2.member, p3.member]
    await cf.call("session", room=room, action="floor_only", on=True)
    given = await cf.call("floor", room=room, action="give", user=p1.member, seconds=5)
    floor = await _session_event(c2, room, "floor", user=p1.member)
    assert floor["seq"] == given["seq"] and floor["until"].endswith("Z")
    assert (await c2.error("send", room=room, text="me too", client_id="m2"))["code"] == "forbidden"
    await c1.call("send", room=room, text="I have been sleeping better.", client_id="share")
    tick = await c2.event("floor_time", room=room)
    assert tick["user"] == p1.member and 0 < tick["seconds_left"] <= 5
    yielded = await _session_event(c2, room, "floor", reason="time")
    assert yielded["user"] is None and yielded["from"]["id"] == "hearth"
    assert (await c1.error("send", room=room, text="one more thing", client_id="late"))["code"] == "forbidden"
    await cf.call("floor", room=room, action="give", user=p2.member)
    await c2.call("floor", room=room, action="pass")  # to the next raised hand
    assert (await _session_event(cc, room, "floor", reason="passed"))["user"] == p3.member
    await cf.call("session", room=room, action="floor_only", on=False)

    # Mute and removal are enforced by the server.
    await cf.call("mute", room=room, user=p3.member, muted=True)
    assert "muted" in (await c3.error("send", room=room, text="hey", client_id="x"))["message"]
    await cf.call("mute", room=room, user=p3.member, muted=False)
    await c3.call("send", room=room, text="thanks", client_id="y")
    await cf.call("remove", room=room, user=carer.member)
    assert (await _session_event(cc, room, "removed"))["user"] == carer.member  # told, then closed
    assert await cc.close_code() == 4403
    again = await open_client(server, carer)
    clients.append(again)
    assert (await again.error("join", room=room))["code"] == "forbidden"

    # Check-in: the server walks the roster; entries are private; facilitators get the summary.
    started = await cf.call("checkin", room=room, action="start")
    order = (await _session_event(c1, room, "checkin", step="started"))["order"]
    assert sorted(order) == sorted([p1.member, p2.member, p3.member]) and started["seq"] > 0
    answers = {p1.member: {"mood": 4, "word": "hopeful"}, p2.member: {"pass": True}, p3.member: {"mood": 2}}
    by_id = {p1.member: c1, p2.member: c2, p3.member: c3}
    for member in order:
        other = next(c for u, c in by_id.items() if u != member)
        assert (await other.error("checkin", room=room, mood=3))["code"] == "conflict"  # not their turn
        await by_id[member].call("checkin", room=room, **answers[member])
    await _session_event(c1, room, "checkin", step="ended")  # members see the round end
    summary = (await _session_event(cf, room, "checkin", step="summary"))["summary"]
    assert {s["user"]: s.get("mood") for s in summary} == {p1.member: 4, p2.member: None, p3.member: 2}
    assert next(s for s in summary if s["user"] == p2.member)["passed"] is True
    seen_by_p1 = (await c1.call("history", room=room, limit=100))["events"]
    assert [e["user"] for e in seen_by_p1 if e.get("step") == "entry"] == [p1.member]  # one's own entry only
    assert not [e for e in seen_by_p1 if e.get("step") == "summary"]
    assert [e["user"] for e in seen_by_p1 if e.get("action") == "waiting"] == [p1.member]  # not who else waited

    await cf.call("session", room=room, action="end")
    await _session_event(c1, room, "ended")
    report = await cf.call("attendance", room=room)
    assert report["session"]["title"] == "Thursday circle"
    assert {a["user"] for a in report["attendees"]} == {fac.member, p1.member, p2.member, p3.member, carer.member}
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
    await cf.call("admit", room=room, user=p2.member)
    await cf.call("session", room=room, action="start")
    await c1.call("hand", room=room, up=True)
    seen = (await c2.call("send", room=room, text="before the drop", client_id="b"))["seq"]
    await c2.close()
    await c1.call("hand", room=room, up=False)
    await c1.call("hand", room=room, up=True)
    await cf.call("mute", room=room, user=p2.member, muted=True)
    await cf.call("floor", room=room, action="give", user=p1.member)
    back = await open_client(server, p2)
    clients.append(back)
    joined = await back.call("join", room=room, since=seen)
    assert joined["waiting"] is False
    session = joined["session"]
    assert session["state"] == "live" and session["floor"] == p1.member and session["muted"] == [p2.member]
    assert session["queue"] == []
    assert [e["action"] for e in joined["events"] if e["ev"] == "session"] == ["hand", "hand", "muted", "floor"]
    assert (await back.error("send", room=room, text="still muted?", client_id="m"))["code"] == "forbidden"


async def test_lobby_rules_capacity_lock_deny_and_automatic_admission(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Capacity holds, a locked lobby turns newcomers away, a denial carries its message, re-entry for staff."""
    room, fac, (p1, p2, p3, p4) = await _group(server, api, clients, 4)
    cf = await open_client(server, fac)
    clients.append(cf)
    await cf.call("join", room=room)
    await cf.call("session", room=room, action="open", title="Small circle", capacity=1)
    c1 = await open_client(server, p1)
    c2 = await open_client(server, p2)
    c3 = await open_client(server, p3)
    c4 = await open_client(server, p4)
    clients += [c1, c2, c3, c4]
    for c in (c1, c2):
        await c.call("join", room=room)
    assert (await cf.error("admit", room=room))["code"] == "conflict"  # two waiting, one place
    await cf.call("admit", room=room, user=p1.member)
    assert (await cf.error("admit", room=room, user=p2.member))["message"] == "The session is full."
    await cf.call("deny", room=room, user=p2.member, message="This circle is full tonight; see you Thursday.")
    denied = await _session_event(c2, room, "denied")
    assert denied["message"].startswith("This circle is full") and denied["to"] == [p2.member]
    await cf.call("session", room=room, action="lock")
    assert (await c3.error("join", room=room))["message"].startswith("This session is locked")
    await cf.call("session", room=room, action="unlock")
    assert (await c3.call("join", room=room))["waiting"] is True
    # The facilitator always gets back in, straight past the lobby, and sees who waits.
    await cf.close()
    back = await open_client(server, fac)
    clients.append(back)
    joined = await back.call("join", room=room)
    assert joined["waiting"] is False and [w["id"] for w in joined["session"]["waiting"]] == [p3.member]
    assert joined["session"]["admitted"] == sorted([fac.member, p1.member])  # in the room when it opened, or let in
    # Only the session's facilitators run it.
    assert (await c1.error("admit", room=room, user=p3.member))["code"] == "forbidden"
    assert (await c1.error("session", room=room, action="end"))["code"] == "forbidden"
    await back.call("session", room=room, action="end")
    # After the end, the room is the group's room again: everyone waiting is in.
    await _session_event(c3, room, "ended")
    assert (await c3.call("send", room=room, text="made it", client_id="in"))["seq"] > 0
    await c4.call("join", room=room)
    assert (await c4.call("send", room=room, text="me too", client_id="in4"))["seq"] > 0


async def test_the_lead_passes_to_a_co_facilitator_by_hand_and_when_the_lead_drops(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Lead handed over by command, then taken over by the co-facilitator present when the lead's socket drops."""
    room, lead, (p1,) = await _group(server, api, clients, 1)
    co = await api.staff()
    assert (await api.http.post(f"/api/rooms/{room}/members", json={"user": co.id, "role": "facilitator"},
                                headers={"Authorization": f"Bearer {lead.token}"})).status_code == 201  # fmt: skip
    cl, cc, c1 = await open_client(server, lead), await open_client(server, co), await open_client(server, p1)
    clients += [cc, c1]
    for c in (cl, cc, c1):
        await c.call("join", room=room)
    await cl.call("session", room=room, action="open", title="Circle", co_facilitators=[co.member])
    await cl.call("session", room=room, action="start")
    await cl.call("session", room=room, action="pin", kind="agenda", text="1. Check-in  2. Sharing  3. Close")
    assert (await _session_event(c1, room, "pinned"))["text"].startswith("1. Check-in")
    await cl.call("session", room=room, action="lead", user=co.member)
    assert (await _session_event(c1, room, "lead"))["user"] == co.member
    await cc.call("session", room=room, action="lead", user=lead.member)  # and back
    await _session_event(c1, room, "lead", user=lead.member)
    await cl.close()  # the lead's only connection drops
    promoted = await _session_event(c1, room, "lead", reason="dropped")
    assert promoted["user"] == co.member and promoted["from"]["id"] == "hearth"
    assert (await c1.error("session", room=room, action="lead", user=p1.member))["code"] == "forbidden"


async def test_registered_members_are_admitted_automatically_when_the_session_says_so(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """The scheduler opens the lobby; with auto_admit a registered member skips it, a walk-in waits."""
    room, fac, (registered, walk_in) = await _group(server, api, clients, 2)
    start = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M")
    headers = {"Authorization": f"Bearer {fac.token}"}
    body = {"title": "Auto circle", "start": start, "tz": "UTC", "duration_minutes": 60, "auto_admit": True,
            "lobby_minutes": 0, "reminder_minutes": 0}  # fmt: skip
    cf = await open_client(server, fac)
    clients.append(cf)
    await cf.call("join", room=room)
    session = (await api.http.post(f"/api/rooms/{room}/sessions", json=body, headers=headers)).json()["session"]
    occurrences = await api.http.get(f"/api/sessions/{session['id']}/occurrences", headers=headers)
    key = occurrences.json()["occurrences"][0]["key"]
    r = await api.http.post(f"/api/sessions/{session['id']}/occurrences/{key}/registration",
                            headers={"Authorization": f"Bearer {registered.token}"})  # fmt: skip
    assert r.status_code == 201
    # Now let the lobby open 10 minutes ahead: the scheduler opens it by itself.
    r = await api.http.patch(f"/api/sessions/{session['id']}", json={"lobby_minutes": 10}, headers=headers)
    assert r.status_code == 200, r.text
    opened = await _session_event(cf, room, "opened")
    assert opened["key"] == key and opened["auto_admit"] is True and opened["registered"] == [registered.member]
    cr, cw = await open_client(server, registered), await open_client(server, walk_in)
    clients += [cr, cw]
    assert (await cr.call("join", room=room))["waiting"] is False
    assert (await cw.call("join", room=room))["waiting"] is True


async def test_a_member_removed_amid_a_burst_is_told_before_the_socket_closes(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """A removal committed together with a burst of messages (one group commit, written to
    each socket in one go) still reaches the removed member, after the messages before it,
    and only then is the socket closed with 4403."""
    room, fac, (p1, p2) = await _group(server, api, clients, 2)
    cf, c1, c2 = [await open_client(server, account) for account in (fac, p1, p2)]
    clients += [cf, c1, c2]
    for c in (cf, c1, c2):
        await c.call("join", room=room)
    await cf.call("session", room=room, action="open", title="A busy evening")
    sends = (c1.call("send", room=room, text=f"m{i}", client_id=f"m{i}") for i in range(30))
    _, *acks = await asyncio.gather(cf.call("remove", room=room, user=p2.member), *sends)
    seen: list[int] = []
    while (event := await c2.event(room=room))["ev"] != "session" or event["action"] != "removed":
        if event["ev"] == "message":
            seen.append(event["seq"])
    assert event["user"] == p2.member
    assert seen == sorted(a["seq"] for a in acks if a["seq"] < event["seq"])  # all before it, in order
    assert await c2.close_code() == 4403


async def test_concurrent_session_changes_leave_no_lock_behind(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Changes sent at once to the sessions of three rooms queue for each room's lock and all
    apply, one seq each; once the sessions end, the worker keeps nothing per room for them
    (a lock per room ever changed used to stay for the life of the process)."""
    facilitator = await api.staff()
    rooms = [await api.room(facilitator, kind="group", name=f"Circle {i}") for i in range(3)]
    cf = await open_client(server, facilitator)
    clients.append(cf)
    for room in rooms:
        await cf.call("join", room=room)
    await asyncio.gather(*(cf.call("session", room=room, action="open", title="Circle") for room in rooms))
    pins = [
        (room, cf.call("session", room=room, action="pin", kind="agenda", text=str(i)))
        for room in rooms
        for i in range(5)
    ]
    acks = await asyncio.gather(*(call for _, call in pins))
    for room in rooms:
        assert len({ack["seq"] for (r, _), ack in zip(pins, acks, strict=True) if r == room}) == 5
    await asyncio.gather(*(cf.call("session", room=room, action="end") for room in rooms))
    assert server.hub.desk._turns == {}
