"""The crisis path: a message that says someone may be in danger opens a case, alerts the
staff in the room and the staff on duty anywhere in the community (and nobody else),
and sends the author crisis resources privately; concerns and reports are silent; staff
acknowledge and resolve cases, and each step is audited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    TIMEOUT,
    UNIT,
    Api,
    Client,
    Running,
    ServerProcess,
    auth,
    open_client,
    process_account,
    process_room,
    record_figure,
)
from tests.support.processes import process_community
from tests.test_communities import audit


async def test_a_crisis_message_alerts_staff_here_and_on_duty_and_sends_the_author_resources(
    server: Running, api: Api, clients: list[Client]
) -> None:
    lead, on_call = await api.staff(), await api.staff("clinician")
    room, other = await api.room(lead), await api.room(lead)
    sam, kit = await api.signup(), await api.signup()
    c_lead, c_on_call, c_sam, c_kit = [await open_client(server, who) for who in (lead, on_call, sam, kit)]
    clients += [c_lead, c_on_call, c_sam, c_kit]
    await c_lead.call("join", room=room)
    await c_on_call.call("join", room=other, on_duty=True)
    for client in (c_sam, c_kit):
        await client.call("join", room=room)

    started = asyncio.get_running_loop().time()
    sent = await c_sam.call("send", room=room, text="honestly I just want to kms tonight", client_id="c1")
    alert = await c_lead.event("alert", room=room)
    record_figure(
        "crisis", "alert to staff in the room after", (asyncio.get_running_loop().time() - started) * 1000, "ms"
    )
    case = alert["case"]
    assert (case["kind"], case["category"], case["room"], case["seq"]) == ("crisis", "suicide", room, sent["seq"])
    assert case["member"]["id"] == sam.member and case["status"] == "open"
    assert "seq" not in alert  # not a room event
    assert (await c_on_call.event("alert"))["case"]["id"] == case["id"]  # on duty in another room
    resources = await c_sam.event("resources", room=room)
    assert resources["reason"] == "crisis" and resources["resources"][0]["title"]
    # Delivered as written, to everyone; nobody else hears of the case or the resources.
    assert (await c_kit.event("message", room=room))["text"] == "honestly I just want to kms tonight"
    for client in (c_kit, c_sam):
        await client.no_event("alert", within=0.5 * UNIT)
    for client in (c_kit, c_lead, c_on_call):
        await client.no_event("resources", within=0.1 * UNIT)

    community = await api.community()
    r = await api.http.get(f"/api/communities/{community}/cases", params={"status": "open"}, headers=auth(lead))
    assert r.status_code == 200 and case["id"] in [c["id"] for c in r.json()["cases"]]
    r = await api.http.get(f"/api/communities/{community}/cases", headers=auth(kit))
    assert r.status_code == 403
    r = await api.http.post(f"/api/cases/{case['id']}", json={"action": "ack"}, headers=auth(kit))
    assert r.status_code == 403
    r = await api.http.post(f"/api/cases/{case['id']}", json={"action": "ack"}, headers=auth(lead))
    assert r.status_code == 200 and r.json()["case"]["status"] == "acked"
    r = await api.http.post(
        f"/api/cases/{case['id']}",
        json={"action": "resolve", "note": "Called, safe with family."},
        headers=auth(on_call),
    )
    assert r.status_code == 200
    steps = r.json()["case"]["steps"]
    assert [(s["action"], s["by"]["id"]) for s in steps] == [("ack", lead.member), ("resolve", on_call.member)]
    assert (
        await api.http.post(f"/api/cases/{case['id']}", json={"action": "ack"}, headers=auth(lead))
    ).status_code == 409
    assert [(row["actor"], row["reason"]) for row in await audit(server, "case.resolve", target=case["id"])] == [
        (on_call.id, "Called, safe with family.")
    ]
    assert len(await audit(server, "case.ack", target=case["id"])) == 1


async def test_an_idiom_opens_no_case_and_the_communitys_resources_reach_the_author(
    server: Running, api: Api, clients: list[Client]
) -> None:
    lead = await api.staff()
    room = await api.room(lead)
    sam = await api.signup()
    community = await api.community()
    mine = [{"title": "Carers' line", "text": "Open all night.", "phone": "0800 000 000"}]
    r = await api.http.put(
        f"/api/communities/{community}/resources/crisis", json={"resources": mine}, headers=auth(sam)
    )
    assert r.status_code == 403
    r = await api.http.put(
        f"/api/communities/{community}/resources/crisis", json={"resources": mine}, headers=auth(lead)
    )
    assert r.status_code == 200, r.text
    for bad in ([], [{"title": "x"}], [{"title": "x", "text": "y", "url": "javascript:alert(1)"}], "no"):
        r = await api.http.put(
            f"/api/communities/{community}/resources/crisis", json={"resources": bad}, headers=auth(lead)
        )
        assert r.status_code == 400, bad
    c_lead, c_sam = await open_client(server, lead), await open_client(server, sam)
    clients += [c_lead, c_sam]
    await c_lead.call("join", room=room)
    await c_sam.call("join", room=room)
    await c_sam.call("send", room=room, text="my back is killing me after the shopping", client_id="i1")
    await c_sam.call("send", room=room, text="I took all my pills, every last one", client_id="i2")
    alert = await c_lead.event("alert", room=room)
    assert alert["case"]["category"] == "overdose"
    assert (await c_sam.event("resources", room=room))["resources"] == mine
    await c_lead.no_event("alert", within=0.3 * UNIT)  # the idiom before it opened nothing


async def test_a_concern_and_a_report_are_silent_and_a_report_keeps_what_was_said(
    server: Running, api: Api, clients: list[Client]
) -> None:
    lead = await api.staff()
    room = await api.room(lead)
    sam, kit, jo = await api.signup(), await api.signup(), await api.signup()
    c_lead, c_sam, c_kit, c_jo = [await open_client(server, who) for who in (lead, sam, kit, jo)]
    clients += [c_lead, c_sam, c_kit, c_jo]
    for client in (c_lead, c_sam, c_kit, c_jo):
        await client.call("join", room=room)
    sent = await c_sam.call("send", room=room, text="You are all useless", client_id="r1")
    case = (await c_kit.call("concern", room=room, member=sam.member, note="Sam seems low lately"))["case"]
    alert = await c_lead.event("alert", room=room)
    assert alert["case"]["id"] == case and alert["case"]["kind"] == "concern"
    assert alert["case"]["member"]["id"] == sam.member and alert["case"]["raised_by"] == kit.member
    reported = (await c_jo.call("report", room=room, seq=sent["seq"], reason="Rude to everyone"))["case"]
    await c_sam.call("edit", room=room, target=sent["seq"], text="Sorry, bad day")
    alert = await c_lead.event("alert", room=room, where=lambda e: e["case"]["id"] == reported)
    assert alert["case"]["snapshot"] == "You are all useless"
    community = await api.community()
    r = await api.http.get(f"/api/communities/{community}/cases", headers=auth(lead))
    (kept,) = [c for c in r.json()["cases"] if c["id"] == reported]
    assert kept["snapshot"] == "You are all useless" and kept["note"] == "Rude to everyone"
    # Nobody but staff heard of either: not Sam, not the others.
    for client in (c_sam, c_kit, c_jo):
        await client.no_event("alert", within=0.3 * UNIT)
        assert not client.seen(where=lambda e: "result" not in e and (case in str(e) or reported in str(e)))
    # Bad input changes nothing.
    assert (await c_kit.error("concern", room=room))["code"] == "bad_request"
    assert (await c_kit.error("concern", room=room, seq=1, member=sam.member))["code"] == "bad_request"
    assert (await c_kit.error("report", room=room, seq=9999, reason="x"))["code"] == "not_found"
    assert (await c_kit.error("concern", room=room, member="m_000000000000"))["code"] == "not_found"


async def test_reports_past_the_burst_are_rate_limited(server: Running, api: Api, clients: list[Client]) -> None:
    lead = await api.staff()
    room = await api.room(lead)
    sam, kit = await api.signup(), await api.signup()
    c_sam, c_kit = await open_client(server, sam), await open_client(server, kit)
    clients += [c_sam, c_kit]
    for client in (c_sam, c_kit):
        await client.call("join", room=room)
    sent = await c_sam.call("send", room=room, text="hello", client_id="h")
    for _ in range(10):
        await c_kit.call("report", room=room, seq=sent["seq"], reason="again")
    error = await c_kit.error("report", room=room, seq=sent["seq"], reason="again")
    assert error["code"] == "rate_limited" and error["retry_after"] > 0


# Two workers sharing Redis and PostgreSQL


@pytest.fixture
async def workers(
    tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str
) -> AsyncIterator[list[ServerProcess]]:
    env = {"REDIS_URL": redis_url, "HEARTH_REDIS_PREFIX": redis_prefix, "DATABASE_URL": postgres_url}
    started = [ServerProcess(tmp_path, **env) for _ in range(2)]
    await started[0].start()
    await started[1].start()
    yield started
    for worker in started:
        await worker.stop()


async def test_the_alert_reaches_on_duty_staff_on_the_other_worker_within_a_second(
    workers: list[ServerProcess], clients: list[Client]
) -> None:
    a, b = workers
    lead, on_call = await process_account(a, "facilitator"), await process_account(b, "clinician")
    room, other = await process_room(a, lead), await process_room(a, lead)
    sam, kit = await process_account(a), await process_account(b)
    c_on_call = await open_client(b, on_call)
    c_kit = await open_client(b, kit)
    c_sam = await open_client(a, sam)
    clients += [c_on_call, c_kit, c_sam]
    await c_on_call.call("join", room=other, on_duty=True)
    await c_kit.call("join", room=room)
    await c_sam.call("join", room=room)
    started = asyncio.get_running_loop().time()
    await c_sam.call("send", room=room, text="he hit me again last night and I'm scared", client_id="a1")
    alert = await c_on_call.event("alert")
    took = asyncio.get_running_loop().time() - started
    record_figure("crisis", "alert on the other worker after", took * 1000, "ms")
    assert took < 1.0 * UNIT
    assert alert["case"]["category"] == "abuse" and alert["case"]["member"]["id"] == sam.member
    await c_sam.event("resources", room=room)
    await c_kit.no_event("alert", within=0.5 * UNIT)
    community = await process_community(b, on_call)
    async with httpx.AsyncClient(base_url=b.http_url, timeout=TIMEOUT) as http:
        r = await http.get(f"/api/communities/{community}/cases", headers=auth(on_call))
        assert [c["id"] for c in r.json()["cases"]] == [alert["case"]["id"]]  # one case, whichever worker
