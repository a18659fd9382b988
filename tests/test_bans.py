"""Bans: staff put an account (not a name) out of a community. Its sockets in the
community's rooms close with 4403 within a second, on every worker; it cannot join those
rooms, nor the community again under another name, until the ban is lifted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert

from server.store.tables import bans
from tests.conftest import (
    TIMEOUT,
    UNIT,
    Account,
    Api,
    Client,
    Running,
    ServerProcess,
    auth,
    eventually,
    open_client,
    process_account,
    process_room,
    record_figure,
    serving,
    test_settings,
)
from tests.support.processes import process_community
from tests.test_communities import audit, enter, new_community
from tests.test_schedule import WEEKLY_THURSDAY, create, group, occurrence_url, occurrences


async def ban(http: httpx.AsyncClient, actor: Account, community: str, member: str, reason: str) -> httpx.Response:
    return await http.post(
        f"/api/communities/{community}/bans", json={"member": member, "reason": reason}, headers=auth(actor)
    )


async def lift(http: httpx.AsyncClient, actor: Account, community: str, member: str) -> httpx.Response:
    return await http.delete(f"/api/communities/{community}/bans/{member}", headers=auth(actor))


async def member_id_of(api: Api, account: Account, community: str) -> str:
    """`account`'s member id in `community`, as the list of communities shows it."""
    r = await api.http.get("/api/communities", headers=auth(account))
    (card,) = [c["member"] for c in r.json()["communities"] if c["id"] == community]
    member: str = card["id"]
    return member


async def test_a_ban_closes_the_accounts_sockets_in_the_community_and_keeps_it_out(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Sam has two sockets in two rooms of a community and one in a room of another: the ban
    closes the first two with 4403 within a second and leaves the third; Sam's joins there
    and joining the community again under a new name are refused until staff lift it."""
    community = await new_community(api)
    staff = await api.staff(join=False)
    await api.join(staff, community, "Lee")
    room, other_room = await api.room(staff, community=community), await api.room(staff, community=community)
    elsewhere = await api.room(await api.staff())  # a room of the test community
    sam, kit = await api.signup(), await api.signup()
    sam_here = await api.join(sam, community, "Sam")
    kit_here = await api.join(kit, community, "Kit")
    s1, s2, s3, k = [await open_client(server, who) for who in (sam, sam, sam, kit)]
    clients += [s1, s2, s3, k]
    await s1.call("join", room=room)
    await s2.call("join", room=other_room)
    await s3.call("join", room=elsewhere)
    await k.call("join", room=room)

    # Nobody but staff bans; and staff ban neither themselves nor an admin.
    r = await ban(api.http, kit, community, sam_here, "spam")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert (await ban(api.http, staff, community, (await member_id_of(api, staff, community)), "me")).status_code == 403
    r = await ban(api.http, staff, community, sam.member, "a card of another community")
    assert r.status_code == 404

    started = asyncio.get_running_loop().time()
    r = await ban(api.http, staff, community, sam_here, "Threats to other members")
    assert r.status_code == 201, r.text
    assert r.json() == {"ban": {"member": {"id": sam_here, "name": "Sam", "role": "patient"}}}
    for socket in (s1, s2):
        assert await socket.closing(within=1.0 * UNIT) == (4403, "banned from this community")
    record_figure("ban", "sockets closed after", (asyncio.get_running_loop().time() - started) * 1000, "ms")
    await s3.call("ping")  # not in the community's rooms: open
    await s3.call("send", room=elsewhere, text="still here", client_id="s")
    await k.call("send", room=room, text="Kit stays", client_id="k")

    again = await open_client(server, sam)
    clients.append(again)
    error = await again.error("join", room=room)
    assert error["code"] == "banned"
    await again.call("join", room=elsewhere)
    r = await enter(api, sam, community, "Someone else")
    assert r.status_code == 403 and r.json()["error"]["code"] == "banned"
    listed = {room["id"] for room in (await api.http.get("/api/rooms", headers=auth(sam))).json()["rooms"]}
    assert elsewhere in listed and not listed & {room, other_room}  # the community's rooms are not offered
    r = await ban(api.http, staff, community, sam_here, "again")
    assert r.status_code == 409
    assert (await lift(api.http, kit, community, sam_here)).status_code == 403
    assert (await lift(api.http, staff, community, kit_here)).status_code == 404  # not banned

    r = await lift(api.http, staff, community, sam_here)
    assert r.status_code == 200, r.text
    joined = await again.call("join", room=room)
    assert {"id": sam_here, "name": "Sam", "role": "patient"} in joined["presence"]
    assert (await lift(api.http, staff, community, sam_here)).status_code == 404

    bans = await audit(server, "ban", community_id=community)
    lifts = await audit(server, "ban.lift", community_id=community)
    assert [(row["actor"], row["target"], row["reason"]) for row in bans] == [
        (staff.id, sam_here, "Threats to other members")
    ]
    assert [(row["actor"], row["target"]) for row in lifts] == [(staff.id, sam_here)]


async def test_an_admin_cannot_be_banned(server: Running, api: Api, clients: list[Client]) -> None:
    staff, admin = await api.staff(), await api.staff("admin", join=False)
    room = await api.room(staff)
    client = await open_client(server, admin)
    clients.append(client)
    await client.call("join", room=room)  # an admin comes in under their account's name
    member = await member_id_of(api, admin, await api.community())
    r = await ban(api.http, staff, await api.community(), member, "no")
    assert r.status_code == 403
    await client.call("ping")


async def test_a_banned_member_of_staff_loses_staff_rights_there(server: Running, api: Api) -> None:
    """A facilitator banned from a community is staff there no more: they cannot ban, lift,
    resolve members, add people, set the agreement or open rooms in it; nor rename
    themselves or accept its agreement. Elsewhere they keep their rights."""
    community = await new_community(api)
    admin = await api.staff("admin", join=False)
    lee, sam = await api.staff(join=False), await api.signup()
    lee_here = await api.join(lee, community, "Lee")
    sam_here = await api.join(sam, community, "Sam")
    assert (await ban(api.http, admin, community, lee_here, "Misused their role")).status_code == 201
    base = f"/api/communities/{community}"
    refused = [
        await ban(api.http, lee, community, sam_here, "retaliation"),
        await lift(api.http, lee, community, lee_here),
        await api.http.get(f"{base}/members/{sam_here}", headers=auth(lee)),
        await api.http.post(f"{base}/members", json={"user": sam.id, "display_name": "S"}, headers=auth(lee)),
        await api.http.put(f"{base}/agreement", json={"text": "Mine now"}, headers=auth(lee)),
        await api.http.post(
            "/api/rooms", json={"name": "Side room", "kind": "drop_in", "community": community}, headers=auth(lee)
        ),
        await api.http.patch(f"{base}/members/me", json={"display_name": "Not Lee"}, headers=auth(lee)),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused), [r.text for r in refused]
    assert [r.json()["error"]["code"] for r in refused[-1:]] == ["banned"]
    assert await audit(server, "member.account", community_id=community) == []
    r = await api.http.get(f"{base}/agreement", headers=auth(lee))
    assert r.status_code == 403 and r.json()["error"]["code"] == "banned"
    r = await api.http.post(f"{base}/agreement/accept", json={"version": 1}, headers=auth(lee))
    assert r.status_code == 403
    # Still staff of the test community.
    await api.join(lee)
    r = await api.http.get(f"/api/communities/{await api.community()}/members/{sam.member}", headers=auth(lee))
    assert r.status_code == 200
    # Lifted, they are staff again.
    assert (await lift(api.http, admin, community, lee_here)).status_code == 200
    assert (await api.http.get(f"{base}/members/{sam_here}", headers=auth(lee))).status_code == 200


# Two workers sharing Redis and PostgreSQL


@pytest.fixture
async def workers(
    tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str
) -> AsyncIterator[list[ServerProcess]]:
    env = {"REDIS_URL": redis_url, "HEARTH_REDIS_PREFIX": redis_prefix, "DATABASE_URL": postgres_url}
    started = [ServerProcess(tmp_path, **env) for _ in range(2)]
    await started[0].start()  # migrates the store; then the second one
    await started[1].start()
    yield started
    for worker in started:
        await worker.stop()


async def test_a_ban_and_an_agreement_made_on_one_worker_hold_on_the_other(
    workers: list[ServerProcess], clients: list[Client]
) -> None:
    """On worker A an admin makes a second community, staff set a new agreement, Kit renames,
    then staff ban Sam. On worker B, Sam's socket closes with 4403 within a second and Sam's
    next join there is refused; Kit, connected on B all along, sends under the new name and
    is asked to accept the new agreement at their next join; and a room made on B must now
    name its community. (B acts on A's notices in order: once the ban is seen, so are the
    others.)"""
    a, b = workers
    staff = await process_account(a, "facilitator")
    room = await process_room(a, staff)
    sam, kit = await process_account(b), await process_account(b)
    community = await process_community(a, staff)
    admin = await process_account(a, "admin", join=False)
    async with httpx.AsyncClient(base_url=b.http_url, timeout=TIMEOUT) as on_b_http:
        r = await on_b_http.post("/api/rooms", json={"name": "Unnamed", "kind": "drop_in"}, headers=auth(staff))
        assert r.status_code == 201 and r.json()["room"]["community"] == community  # the only one, B knows
    async with httpx.AsyncClient(base_url=a.http_url, timeout=TIMEOUT) as http:
        r = await http.post("/api/communities", json={"name": "Second"}, headers=auth(admin))
        assert r.status_code == 201
        r = await http.put(f"/api/communities/{community}/agreement", json={"text": "One"}, headers=auth(staff))
        assert r.json() == {"version": 1}
        for who in (sam, kit, staff):
            accepted = await http.post(
                f"/api/communities/{community}/agreement/accept", json={"version": 1}, headers=auth(who)
            )
            assert accepted.status_code == 200
        on_b = [await open_client(b, who) for who in (sam, kit)]
        clients += on_b
        sam_b, kit_b = on_b
        for client in on_b:
            await client.call("join", room=room)  # worker B has read agreement version 1
        r = await http.put(f"/api/communities/{community}/agreement", json={"text": "Two"}, headers=auth(staff))
        assert r.json() == {"version": 2}
        r = await http.patch(
            f"/api/communities/{community}/members/me", json={"display_name": "Kit"}, headers=auth(kit)
        )
        assert r.status_code == 200
        started = asyncio.get_running_loop().time()
        r = await ban(http, staff, community, sam.member, "Harassment")
        assert r.status_code == 201, r.text
        assert await sam_b.closing(within=1.0 * UNIT) == (4403, "banned from this community")
        took = asyncio.get_running_loop().time() - started
        record_figure("ban on another worker", "socket closed after", took * 1000, "ms")
        # B has acted on the ban, and so on the agreement published before it.
        sam_again = await open_client(b, sam)
        clients.append(sam_again)
        assert (await sam_again.error("join", room=room))["code"] == "banned"
        async with httpx.AsyncClient(base_url=b.http_url, timeout=TIMEOUT) as on_b_http:
            r = await on_b_http.post("/api/rooms", json={"name": "Unnamed", "kind": "drop_in"}, headers=auth(staff))
            assert r.status_code == 400  # two communities now: name one
        await kit_b.call("send", room=room, text="still in", client_id="k")  # the change asks at the next join
        sent = await kit_b.event("message", room=room, where=lambda e: e["text"] == "still in")
        assert sent["from"] == {"id": kit.member, "name": "Kit", "role": "patient"}  # renamed on A
        error = await kit_b.error("join", room=room)
        assert error["code"] == "agreement_required" and error["agreement"]["version"] == 2
        r = await http.post(f"/api/communities/{community}/agreement/accept", json={"version": 2}, headers=auth(kit))
        assert r.status_code == 200
        await kit_b.call("join", room=room)
        r = await lift(http, staff, community, sam.member)
        assert r.status_code == 200
    # Lifted on A: once B has acted on it, Sam is back in on B (after accepting version 2).
    async with httpx.AsyncClient(base_url=b.http_url, timeout=TIMEOUT) as http:
        r = await http.post(f"/api/communities/{community}/agreement/accept", json={"version": 2}, headers=auth(sam))
        assert r.status_code == 200

    async def back_in() -> bool:
        return "result" in await sam_again.request("join", room=room)

    await eventually(back_in, within=1.0 * UNIT, every=0.05)


async def test_a_ban_whose_notice_never_came_closes_the_socket_at_the_next_heartbeat(
    tmp_path: Path, clients: list[Client]
) -> None:
    """A ban written by another worker while the broker was away reaches no notice here: the
    heartbeat, which reloads the bans from the store, closes the account's socket with 4403
    within a beat, and its next join is refused."""
    async with serving(test_settings(tmp_path).with_(presence_ttl=1.0)) as (running, api):  # a beat every 0.25 s
        staff = await api.staff()
        room = await api.room(staff)
        sam = await api.signup()
        client = await open_client(running, sam)
        clients.append(client)
        await client.call("join", room=room)
        values = {"community_id": await api.community(), "user_id": sam.id, "banned_by": staff.id}
        async with running.hub.audit.engines.writer.begin() as conn:  # type: ignore[attr-defined]
            await conn.execute(insert(bans).values(**values, reason="elsewhere", created_at=0))
        assert await client.closing(within=2.0 * UNIT) == (4403, "banned from this community")
        again = await open_client(running, sam)
        clients.append(again)
        assert (await again.error("join", room=room))["code"] == "banned"


async def test_a_banned_account_keeps_no_right_over_the_communitys_sessions(api: Api) -> None:
    """A banned facilitator of a group schedules, changes and cancels nothing there any more;
    a banned member of the group neither sees its sessions nor registers."""
    lead, room, (pat,) = await group(api, members=1)
    other = await api.staff()
    r = await api.http.post(
        f"/api/rooms/{room}/members", json={"member": other.member, "role": "facilitator"}, headers=auth(lead)
    )
    assert r.status_code == 201, r.text
    start = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT19:00")
    session = await create(api, lead, room, **WEEKLY_THURSDAY, start=start)
    community = await api.community()
    admin = await api.staff("admin", join=False)
    for banned in (other, pat):
        assert (await ban(api.http, admin, community, banned.member, "out")).status_code == 201
    r = await api.http.post(
        f"/api/rooms/{room}/sessions", json={**WEEKLY_THURSDAY, "start": start}, headers=auth(other)
    )
    assert r.status_code == 403
    r = await api.http.patch(f"/api/sessions/{session['id']}", json={"title": "Mine now"}, headers=auth(other))
    assert r.status_code == 403
    r = await api.http.get(f"/api/rooms/{room}/sessions", headers=auth(pat))
    assert r.status_code == 403
    end = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT00:00:00Z")
    listed = await occurrences(api, lead, session["id"], start[:10] + "T00:00:00Z", end)
    key = listed[0]["key"]
    r = await api.http.post(occurrence_url(session["id"], key, "registration"), headers=auth(pat))
    assert r.status_code == 403
    r = await api.http.post(occurrence_url(session["id"], key, "cancel"), json={}, headers=auth(other))
    assert r.status_code == 403
