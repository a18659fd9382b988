"""Accounts, rooms and membership over HTTP, and who may join what."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.conftest import Api, Client, Running, ServerProcess, auth, open_client, process_account


async def test_signup_and_login_return_a_token_that_opens_a_socket(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """A new user signs up, logs in with the same password, and both tokens authenticate."""
    signup = await api.http.post(
        "/api/signup", json={"username": "Rosa_K", "password": "a long secret", "display_name": "Rosa"}
    )
    assert signup.status_code == 201
    user = signup.json()["user"]
    assert user["name"] == "Rosa" and user["role"] == "patient"
    login = await api.http.post("/api/login", json={"username": "rosa_k", "password": "a long secret"})
    assert login.status_code == 200 and login.json()["user"] == user
    for token in (signup.json()["token"], login.json()["token"]):
        assert (await api.http.get("/api/me", headers={"Authorization": f"Bearer {token}"})).json()["user"] == user
    again = await api.http.post(
        "/api/signup", json={"username": "rosa_k", "password": "another one", "display_name": "R"}
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


async def test_wrong_password_and_unknown_user_get_the_same_answer(server: Running, api: Api) -> None:
    """A failed login does not tell whether the username exists."""
    account = await api.signup()
    wrong = await api.http.post("/api/login", json={"username": account.username, "password": "not it at all"})
    unknown = await api.http.post("/api/login", json={"username": "nobody-here", "password": "not it at all"})
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {"error": {"code": "unauthenticated", "message": "Wrong username or password."}}
    )


async def test_signup_never_grants_a_staff_role(server: Running, api: Api) -> None:
    """Asking for facilitator, clinician or admin at signup is refused; caregiver is allowed."""
    for role in ("facilitator", "clinician", "admin"):
        r = await api.http.post(
            "/api/signup",
            json={"username": f"want-{role}", "password": "a long secret", "display_name": "X", "role": role},
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert (await api.signup("caregiver")).role == "caregiver"


async def test_signup_input_is_checked(server: Running, api: Api) -> None:
    """Short passwords, odd usernames, missing names and non-JSON bodies get 400 bad_request."""
    bad = [
        {"username": "ok-name", "password": "short", "display_name": "A"},
        {"username": "a", "password": "long enough", "display_name": "A"},
        {"username": "spaces here", "password": "long enough", "display_name": "A"},
        {"username": "ok-name2", "password": "long enough"},
        {"username": "ok-name3", "password": "long enough", "display_name": "bad\x00name"},
        {"username": "ok-name4", "password": "long enough", "display_name": "A", "role": "wizard"},
        {"username": "ok-name5", "password": "long enough", "display_name": "A", "role": ["patient"]},
        {"username": ["list"], "password": "long enough", "display_name": "A"},
    ]
    for body in bad:
        r = await api.http.post("/api/signup", json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", body
    r = await api.http.post("/api/signup", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = await api.http.post("/api/signup", content=b"x" * 20000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


async def test_logout_revokes_the_token_and_closes_its_sockets(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """After logout the token is refused over HTTP and websocket, and open sockets close with 4401."""
    account = await api.signup()
    client = await open_client(server, account)
    assert (await api.http.post("/api/logout", headers=auth(account))).status_code == 200
    assert await client.close_code() == 4401
    assert (await api.http.get("/api/me", headers=auth(account))).status_code == 401
    fresh = await open_client(server)
    clients.append(fresh)
    assert (await fresh.error("auth", token=account.token))["code"] == "unauthenticated"
    assert await fresh.close_code() == 4401


async def test_a_double_tapped_logout_signs_out_once_and_never_fails(server: Running, api: Api) -> None:
    """Five logouts of one token at once: each is signed out (200) or finds it signed out
    already (401); none is a server error, and the token stays refused."""
    account = await api.signup()
    replies = await asyncio.gather(*(api.http.post("/api/logout", headers=auth(account)) for _ in range(5)))
    assert {r.status_code for r in replies} <= {200, 401} and 200 in {r.status_code for r in replies}
    assert (await api.http.get("/api/me", headers=auth(account))).status_code == 401


async def test_only_facilitators_and_admins_open_rooms(server: Running, api: Api) -> None:
    """Patients, caregivers and clinicians get 403 on POST /api/rooms; facilitators and admins 201."""
    community = await api.community()
    for role in ("patient", "caregiver"):
        account = await api.signup(role)
        body = {"name": "Mine", "kind": "drop_in", "community": community}
        r = await api.http.post("/api/rooms", json=body, headers=auth(account))
        assert r.status_code == 403
    clinician = await api.staff("clinician")
    body = {"name": "Mine", "kind": "group", "community": community}
    r = await api.http.post("/api/rooms", json=body, headers=auth(clinician))
    assert r.status_code == 403
    for role in ("facilitator", "admin"):
        staff = await api.staff(role)
        r = await api.http.post("/api/rooms", json=body, headers=auth(staff))
        assert r.status_code == 201 and r.json()["room"]["kind"] == "group"
        assert r.json()["room"]["community"] == community
    for kind in ("party", {"group": 1}, ["group"], None):
        r = await api.http.post("/api/rooms", json={**body, "kind": kind}, headers=auth(staff))
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    assert (await api.http.post("/api/rooms", json={"name": "x", "kind": "group"})).status_code == 401


async def test_a_group_admits_members_only_and_its_facilitator_adds_them(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """A non-member is refused; after the room's facilitator adds them, they get in."""
    facilitator = await api.staff()
    group = await api.room(facilitator, kind="group", name="Thursday group")
    patient = await api.signup()
    client = await open_client(server, patient)
    clients.append(client)
    assert (await client.error("join", room=group))["code"] == "forbidden"
    rooms = (await api.http.get("/api/rooms", headers=auth(patient))).json()["rooms"]
    assert group not in [r["id"] for r in rooms]
    added = await api.add_member(facilitator, group, patient)
    assert added.status_code == 201
    assert (await api.add_member(facilitator, group, patient)).status_code == 200  # already a member
    joined = await client.call("join", room=group)
    community = await api.community()
    assert joined["room"] == {"id": group, "name": "Thursday group", "kind": "group", "community": community}
    rooms = (await api.http.get("/api/rooms", headers=auth(patient))).json()["rooms"]
    assert group in [r["id"] for r in rooms]


async def test_only_the_rooms_own_facilitators_add_members(server: Running, api: Api) -> None:
    """A patient or another room's facilitator cannot add members; an admin can."""
    owner, stranger, admin = await api.staff(), await api.staff(), await api.staff("admin")
    group = await api.room(owner, kind="group")
    patient, other = await api.signup(), await api.signup()
    added = await api.add_member(owner, group, patient)
    assert added.json() == {"member": {"id": patient.member, "name": patient.name, "role": "patient"}, "role": "member"}
    assert (await api.add_member(patient, group, other)).status_code == 403
    assert (await api.add_member(stranger, group, other)).status_code == 403
    for nobody in ({"user": "u_nobody"}, {"member": "m_nobody"}):  # refused before anyone is looked up
        r = await api.http.post(f"/api/rooms/{group}/members", json=nobody, headers=auth(stranger))
        assert r.status_code == 403
    assert (await api.add_member(admin, group, other)).status_code == 201
    r = await api.http.post(f"/api/rooms/{group}/members", json={"user": other.id}, headers=auth(owner))
    assert r.status_code == 200 and r.json()["member"]["id"] == other.member  # staff who know the account
    r = await api.http.post(
        f"/api/rooms/{group}/members", json={"user": patient.id, "role": "facilitator"}, headers=auth(owner)
    )
    assert r.status_code == 403  # only staff can facilitate
    for nobody in ({"user": "u_nobody"}, {"member": "m_nobody"}, {"member": patient.id}):
        r = await api.http.post(f"/api/rooms/{group}/members", json=nobody, headers=auth(owner))
        assert r.status_code == 404, nobody
    outsider = await api.signup(join=False)  # an account, but no member of the room's community
    r = await api.http.post(f"/api/rooms/{group}/members", json={"user": outsider.id}, headers=auth(owner))
    assert r.status_code == 404
    r = await api.http.post("/api/rooms/r_nothing/members", json={"user": patient.id}, headers=auth(owner))
    assert r.status_code == 404


async def test_drop_in_rooms_are_open_to_every_signed_in_user(server: Running, api: Api, clients: list[Client]) -> None:
    """Every user sees and joins a drop-in room without being added."""
    staff = await api.staff()
    room = await api.room(staff, kind="drop_in", name="Late night")
    caregiver = await api.signup("caregiver")
    assert room in [r["id"] for r in (await api.http.get("/api/rooms", headers=auth(caregiver))).json()["rooms"]]
    client = await open_client(server, caregiver)
    clients.append(client)
    assert (await client.call("join", room=room))["room"]["kind"] == "drop_in"


async def test_health_and_readiness(server: Running, api: Api) -> None:
    """/healthz says the worker serves; /readyz checks the store and the broker."""
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "checks": {"store": "ok", "broker": "ok"}}


async def test_the_command_line_makes_staff_and_seeds_the_demo(tmp_path: Path, processes: list[ServerProcess]) -> None:
    """`hearth user create` makes a facilitator who can log in; `hearth demo` seeds rooms once."""
    proc = ServerProcess(tmp_path)
    first = await proc.hearth("demo")
    assert "maya" in first and "hearth-demo" in first
    await proc.hearth("demo")  # a second run changes nothing
    await proc.start()
    processes.append(proc)
    staff = await process_account(proc, "facilitator")
    assert staff.role == "facilitator"
    async with httpx.AsyncClient(base_url=proc.http_url) as http:
        login = await http.post("/api/login", json={"username": "maya", "password": "hearth-demo"})
        maya = login.json()
        rooms = (await http.get("/api/rooms", headers={"Authorization": f"Bearer {maya['token']}"})).json()["rooms"]
    assert sorted(r["kind"] for r in rooms) == ["drop_in", "drop_in", "group"]  # she runs every demo room
    assert len({r["community"] for r in rooms}) == 2
    client = await open_client(proc)
    await client.call("auth", token=maya["token"])
    group = next(r for r in rooms if r["kind"] == "group")
    refused = await client.error("join", room=group["id"], since=0)  # the demo's communities have agreements
    assert refused["code"] == "agreement_required" and refused["agreement"]["community"] == group["community"]
    async with httpx.AsyncClient(base_url=proc.http_url) as http:
        r = await http.post(
            f"/api/communities/{group['community']}/agreement/accept",
            json={"version": refused["agreement"]["version"]},
            headers={"Authorization": f"Bearer {maya['token']}"},
        )
        assert r.status_code == 200, r.text
    history = (await client.call("join", room=group["id"], since=0))["events"]
    assert [e["from"]["name"] for e in history] == ["Maya", "Sam R"]  # their names in that community
    assert all(e["from"]["id"].startswith("m_") for e in history)
    await client.close()
