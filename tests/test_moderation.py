"""Moderation that sticks: a redaction takes a message's text out of the store for good; the
room, and anyone who resumes or reads history from before it, sees it as deleted and
redacted."""

from __future__ import annotations

from sqlalchemy import select

from server.store.tables import events
from tests.conftest import Api, Client, Running, auth, open_client
from tests.test_communities import audit


async def test_a_redaction_is_replayed_and_the_text_is_gone_from_the_store(
    server: Running, api: Api, clients: list[Client]
) -> None:
    lead = await api.staff()
    room = await api.room(lead)
    sam, kit = await api.signup(), await api.signup()
    c_lead, c_sam, c_kit = [await open_client(server, who) for who in (lead, sam, kit)]
    clients += [c_lead, c_sam, c_kit]
    for client in (c_lead, c_sam, c_kit):
        await client.call("join", room=room)
    sent = await c_sam.call("send", room=room, text="my address is 12 Elm Road, come round", client_id="x1")
    await c_sam.call("edit", room=room, target=sent["seq"], text="my address is 12 Elm Road, flat 2")
    before = sent["seq"] - 1
    # A member may not redact; nor may staff redact what is not a message.
    assert (await c_kit.error("redact", room=room, target=sent["seq"], reason="no"))["code"] == "forbidden"
    assert (await c_lead.error("redact", room=room, target=9999, reason="no"))["code"] == "not_found"
    assert (await c_lead.error("redact", room=room, target=sent["seq"], reason=""))["code"] == "bad_request"
    done = await c_lead.call("redact", room=room, target=sent["seq"], reason="Shared an address")
    live = await c_kit.event("delete", room=room)
    assert live["target"] == sent["seq"] and live["redacted"] is True and live["seq"] == done["seq"]

    # Text gone from every row of the store: the message and its edit.
    async with server.hub.audit.engines.reader.connect() as conn:  # type: ignore[attr-defined]
        rows = (await conn.execute(select(events.c.body).where(events.c.room_id == room))).all()
    assert not any("Elm Road" in row.body for row in rows)

    # Resume from before it, and history: deleted and redacted, no text.
    late = await open_client(server, kit)
    clients.append(late)
    joined = await late.call("join", room=room, since=before)
    shown = {e["seq"]: e for e in joined["events"]}
    assert shown[done["seq"]]["redacted"] is True
    assert "text" not in shown[sent["seq"]] and shown[sent["seq"]]["deleted"] is True
    assert shown[sent["seq"]]["redacted"] is True
    history = (await late.call("history", room=room))["events"]
    assert not any("Elm Road" in str(e) for e in history)
    assert (await c_lead.error("redact", room=room, target=sent["seq"], reason="again"))["code"] == "not_found"
    (row,) = await audit(server, "redact", room_id=room)
    assert (row["actor"], row["target"], row["reason"]) == (lead.id, str(sent["seq"]), "Shared an address")


async def test_slow_mode_holds_members_to_one_message_per_interval_and_staff_are_exempt(
    server: Running, api: Api, clients: list[Client]
) -> None:
    lead = await api.staff()
    room = await api.room(lead)
    sam = await api.signup()
    c_lead, c_sam = await open_client(server, lead), await open_client(server, sam)
    clients += [c_lead, c_sam]
    for client in (c_lead, c_sam):
        await client.call("join", room=room)
    for bad in (
        {"slow_mode": -1},
        {"slow_mode": 100_000},
        {"slow_mode": "5"},
        {"suspended": True},
        {"notice": "x"},
        {},
    ):
        r = await api.http.patch(f"/api/rooms/{room}", json=bad, headers=auth(lead))
        assert r.status_code == 400, bad
    assert (await api.http.patch(f"/api/rooms/{room}", json={"slow_mode": 30}, headers=auth(sam))).status_code == 403
    r = await api.http.patch(f"/api/rooms/{room}", json={"slow_mode": 30}, headers=auth(lead))
    assert r.status_code == 200 and r.json()["room"]["slow_mode"] == 30
    told = await c_sam.event("room", room=room)
    assert told["slow_mode"] == 30 and told["suspended"] is False
    await c_sam.call("send", room=room, text="one", client_id="s1")
    error = await c_sam.error("send", room=room, text="two", client_id="s2")
    assert error["code"] == "rate_limited" and 25 < error["retry_after"] <= 30
    for i in range(3):
        await c_lead.call("send", room=room, text=f"staff {i}", client_id=f"l{i}")
    assert (await api.http.patch(f"/api/rooms/{room}", json={"slow_mode": 0}, headers=auth(lead))).status_code == 200
    await c_sam.event("room", room=room)
    await c_sam.call("send", room=room, text="two", client_id="s2")


async def test_a_suspended_room_tells_everyone_why_and_only_staff_may_send(
    server: Running, api: Api, clients: list[Client]
) -> None:
    lead = await api.staff()
    room = await api.room(lead)
    sam = await api.signup()
    c_lead, c_sam = await open_client(server, lead), await open_client(server, sam)
    clients += [c_lead, c_sam]
    for client in (c_lead, c_sam):
        await client.call("join", room=room)
    notice = "Paused for tonight after a difficult conversation. Back tomorrow at 9."
    r = await api.http.patch(f"/api/rooms/{room}", json={"suspended": True, "notice": notice}, headers=auth(lead))
    assert r.status_code == 200 and r.json()["room"]["suspended"] is True
    for client in (c_lead, c_sam):
        told = await client.event("room", room=room)
        assert told["suspended"] is True and told["notice"] == notice
    error = await c_sam.error("send", room=room, text="hello?", client_id="s1")
    assert error["code"] == "forbidden" and notice in error["message"]
    await c_lead.call("send", room=room, text="We will be back tomorrow.", client_id="l1")
    again = await open_client(server, sam)
    clients.append(again)
    assert (await again.call("join", room=room))["room"]["notice"] == notice
    r = await api.http.patch(f"/api/rooms/{room}", json={"suspended": False}, headers=auth(lead))
    assert r.status_code == 200 and "suspended" not in r.json()["room"]
    await c_sam.event("room", room=room, where=lambda e: e["suspended"] is False)
    await c_sam.call("send", room=room, text="hello again", client_id="s2")
    assert len(await audit(server, "room.moderate", room_id=room)) == 2


async def test_a_timed_mute_silences_a_member_in_every_room_of_the_community_until_lifted(
    server: Running, api: Api, clients: list[Client]
) -> None:
    lead = await api.staff()
    room, other = await api.room(lead), await api.room(lead)
    sam, kit = await api.signup(), await api.signup()
    c_sam, c_kit = await open_client(server, sam), await open_client(server, kit)
    clients += [c_sam, c_kit]
    for r_ in (room, other):
        await c_sam.call("join", room=r_)
    await c_kit.call("join", room=room)
    sent = await c_sam.call("send", room=room, text="before", client_id="b")
    community = await api.community()
    base = f"/api/communities/{community}/mutes"
    for bad in ({"minutes": 0}, {"minutes": 100_000}, {"minutes": "5"}, {"minutes": 5, "reason": ""}):
        body = {"member": sam.member, "reason": "Repeated insults", **bad}
        assert (await api.http.post(base, json=body, headers=auth(lead))).status_code == 400, bad
    body = {"member": sam.member, "minutes": 30, "reason": "Repeated insults"}
    assert (await api.http.post(base, json=body, headers=auth(kit))).status_code == 403
    r = await api.http.post(base, json=body, headers=auth(lead))
    assert r.status_code == 201 and r.json()["mute"]["member"]["id"] == sam.member
    for room_id in (room, other):
        error = await c_sam.error("send", room=room_id, text="still here", client_id=f"m{room_id}")
        assert error["code"] == "forbidden" and "muted" in error["message"]
    assert (await c_sam.error("edit", room=room, target=sent["seq"], text="x"))["code"] == "forbidden"
    assert (await c_sam.error("react", room=room, target=sent["seq"], emoji="🙂"))["code"] == "forbidden"
    await c_kit.call("send", room=room, text="Kit is not muted", client_id="k")
    assert (await api.http.delete(f"{base}/{sam.member}", headers=auth(kit))).status_code == 403
    assert (await api.http.delete(f"{base}/{sam.member}", headers=auth(lead))).status_code == 200
    assert (await api.http.delete(f"{base}/{sam.member}", headers=auth(lead))).status_code == 404
    await c_sam.call("send", room=room, text="back", client_id="a")
    assert [row["action"] for row in await audit(server, "mute", target=sam.member)] == ["mute"]
    assert len(await audit(server, "mute.lift", target=sam.member)) == 1
