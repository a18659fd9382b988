"""Communities, member cards and their names, resolving a member, the group agreement: what
people see over HTTP and on their sockets, against a real server."""

from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from rooms.model import Role
from server.settings import normalise_db_url
from server.store.engine import Engines, open_engines
from server.store.migrate import upgrade
from server.store.tables import audit_log
from tests.conftest import Account, Api, Client, Running, auth, open_client, serving, test_settings
from tests.support.api import PASSWORD


async def audit(running: Running, action: str, **where: str) -> list[dict[str, Any]]:
    """The audit log's rows of `action` (and the columns given), oldest first, read through
    the server's own engine."""
    engines = running.hub.audit.engines  # type: ignore[attr-defined]
    query = select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.id)
    for column, value in where.items():
        query = query.where(audit_log.c[column] == value)
    async with engines.reader.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


async def new_community(api: Api, join: str = "open", name: str = "Carers") -> str:
    admin = await api.staff("admin", join=False)
    r = await api.http.post("/api/communities", json={"name": name, "join": join}, headers=auth(admin))
    assert r.status_code == 201, r.text
    community: str = r.json()["community"]["id"]
    return community


async def enter(api: Api, account: Account, community: str, name: str) -> httpx.Response:
    """`account` joins `community` under `name` (the answer as it comes)."""
    return await api.http.post(
        f"/api/communities/{community}/members", json={"display_name": name}, headers=auth(account)
    )


async def listed(api: Api, account: Account) -> dict[str, Any]:
    r = await api.http.get("/api/communities", headers=auth(account))
    assert r.status_code == 200, r.text
    return {c["id"]: c for c in r.json()["communities"]}


# Communities


async def test_only_an_admin_creates_a_community(api: Api) -> None:
    admin = await api.staff("admin", join=False)
    r = await api.http.post("/api/communities", json={"name": "  Long covid  ", "join": "invite"}, headers=auth(admin))
    assert r.status_code == 201, r.text
    community = r.json()["community"]
    assert community["id"].startswith("c_") and community == {
        "id": community["id"],
        "name": "Long covid",
        "join": "invite",
    }
    for role in ("facilitator", "clinician"):
        staff = await api.staff(role)
        r = await api.http.post("/api/communities", json={"name": "Mine"}, headers=auth(staff))
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    patient = await api.signup()
    r = await api.http.post("/api/communities", json={"name": "Mine"}, headers=auth(patient))
    assert r.status_code == 403
    r = await api.http.post("/api/communities", json={"name": "Bad", "join": "closed"}, headers=auth(admin))
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"
    assert (await api.http.post("/api/communities", json={"name": "x"})).status_code == 401


async def test_the_list_shows_open_communities_and_mine_with_my_card(api: Api) -> None:
    """Open communities are listed for everyone, with my card where I am a member and null
    where I am not; a community by invitation only once I am in it."""
    open_one = await new_community(api, "open", "Open door")
    invite = await new_community(api, "invite", "By invitation")
    sam = await api.signup()
    seen = await listed(api, sam)
    assert seen[await api.community()]["member"] == {"id": sam.member, "name": sam.name, "role": "patient"}
    assert seen[open_one] == {"id": open_one, "name": "Open door", "join": "open", "member": None}
    assert invite not in seen
    admin = await api.staff("admin", join=False)
    r = await api.http.post(
        f"/api/communities/{invite}/members", json={"user": sam.id, "display_name": "Sam K"}, headers=auth(admin)
    )
    assert r.status_code == 201, r.text
    card = r.json()["member"]
    assert card["id"].startswith("m_") and card["id"] != sam.member
    assert (await listed(api, sam))[invite]["member"] == card == {"id": card["id"], "name": "Sam K", "role": "patient"}
    assert invite in await listed(api, admin)  # admins see every community


async def test_an_invite_only_community_is_joined_through_its_staff_and_that_is_audited(
    server: Running, api: Api
) -> None:
    invite = await new_community(api, "invite")
    patient = await api.signup()
    r = await enter(api, patient, invite, "Robin")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    admin = await api.staff("admin", join=False)
    staff = await api.staff("facilitator", join=False)
    r = await api.http.post(
        f"/api/communities/{invite}/members", json={"user": staff.id, "display_name": "Lee"}, headers=auth(admin)
    )
    assert r.status_code == 201, r.text
    r = await api.http.post(
        f"/api/communities/{invite}/members", json={"user": patient.id, "display_name": "Robin"}, headers=auth(staff)
    )
    assert r.status_code == 201, r.text
    member = r.json()["member"]
    assert member["name"] == "Robin" and "user" not in member
    rows = await audit(server, "member.add", target=member["id"])
    assert [(row["actor"], row["community_id"]) for row in rows] == [(staff.id, invite)]
    # A member who is not staff adds nobody; nor does staff of another community.
    other = await api.signup()
    r = await api.http.post(
        f"/api/communities/{invite}/members", json={"user": other.id, "display_name": "Kit"}, headers=auth(patient)
    )
    assert r.status_code == 403
    outsider = await api.staff("facilitator")  # staff of the test community only
    r = await api.http.post(
        f"/api/communities/{invite}/members", json={"user": other.id, "display_name": "Kit"}, headers=auth(outsider)
    )
    assert r.status_code == 403
    r = await api.http.post(
        f"/api/communities/{invite}/members", json={"user": "u_nobody", "display_name": "Kit"}, headers=auth(staff)
    )
    assert r.status_code == 404
    r = await api.http.post(
        f"/api/communities/{invite}/members", json={"user": patient.id, "display_name": "Robin 2"}, headers=auth(staff)
    )
    assert r.status_code == 409  # a member already
    assert len(await audit(server, "member.add", community_id=invite)) == 2  # nothing refused is audited


async def test_a_room_is_made_in_the_community_named(api: Api) -> None:
    staff = await api.staff()
    community = await api.community()
    r = await api.http.post(
        "/api/rooms", json={"name": "Evening", "kind": "group", "community": community}, headers=auth(staff)
    )
    assert r.status_code == 201, r.text
    assert r.json()["room"]["community"] == community
    r = await api.http.post(
        "/api/rooms", json={"name": "E", "kind": "group", "community": "c_nope"}, headers=auth(staff)
    )
    assert r.status_code == 404
    r = await api.http.post("/api/rooms", json={"name": "E", "kind": "group", "community": 7}, headers=auth(staff))
    assert r.status_code == 400
    elsewhere = await new_community(api)  # staff of the test community are not staff there
    r = await api.http.post(
        "/api/rooms", json={"name": "E", "kind": "group", "community": elsewhere}, headers=auth(staff)
    )
    assert r.status_code == 403
    admin = await api.staff("admin", join=False)
    r = await api.http.post(
        "/api/rooms", json={"name": "E", "kind": "group", "community": elsewhere}, headers=auth(admin)
    )
    assert r.status_code == 201 and r.json()["room"]["community"] == elsewhere


async def test_community_is_required_once_there_are_two(tmp_path: Path) -> None:
    """With one community a room goes in it unnamed; once there are two, `community` is
    required (400), and naming it still works."""
    async with serving(test_settings(tmp_path)) as (_, api):
        staff = await api.staff()
        first = await api.community()
        r = await api.http.post("/api/rooms", json={"name": "One", "kind": "drop_in"}, headers=auth(staff))
        assert r.status_code == 201, r.text
        assert r.json()["room"]["community"] == first
        await new_community(api)
        r = await api.http.post("/api/rooms", json={"name": "Two", "kind": "drop_in"}, headers=auth(staff))
        assert r.status_code == 400 and "community" in r.json()["error"]["message"]
        r = await api.http.post(
            "/api/rooms", json={"name": "Two", "kind": "drop_in", "community": first}, headers=auth(staff)
        )
        assert r.status_code == 201 and r.json()["room"]["community"] == first


# Names


async def test_a_name_is_taken_whatever_its_case_normalisation_or_spaces(api: Api) -> None:
    """Names are unique in a community by what they read as: case, NFC and NFKC forms,
    invisible joiners and runs of spaces make no other name."""
    community = await new_community(api)
    first, second = await api.signup(join=False), await api.signup(join=False)
    r = await enter(api, first, community, "  José  ")
    assert r.status_code == 201, r.text
    assert r.json()["member"]["name"] == "José"  # trimmed
    assert (await enter(api, second, community, "Sam Kay")).status_code == 201
    same = [
        "José",
        "JOSÉ",
        unicodedata.normalize("NFD", "José"),
        " josé\t",
        "Ｊｏｓé",  # fullwidth
        "Jo\u200dsé",  # an invisible joiner
        "sam  kay",
        "Sam\u00a0Kay",  # a no-break space
        "Sаm Kаy",  # Cyrillic а, drawn as a Latin a
        "Ѕam Κay",  # Cyrillic Ѕ, Greek Κ
    ]
    other = await api.signup(join=False)
    for name in same:
        r = await enter(api, other, community, name)
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", (name, r.text)
    r = await enter(api, other, community, "Josie")
    assert r.status_code == 201
    # The same name is free in another community.
    r = await enter(api, other, await new_community(api), "José")
    assert r.status_code == 201


async def test_a_name_that_folds_to_a_long_key_is_still_compared(tmp_path: Path, postgres_url: str) -> None:
    """NFKC spells some characters out at length (U+FDFA is 18 letters): 40 of them still make
    a name that is stored (PostgreSQL holds the key's column to its length), and is taken for
    the next one who asks."""
    settings = test_settings(tmp_path).with_(database_url=normalise_db_url(postgres_url))
    async with serving(settings) as (_, api):
        community = await api.community()
        first, second = await api.signup(join=False), await api.signup(join=False)
        name = "\ufdfa" * 40
        r = await enter(api, first, community, name)
        assert r.status_code == 201, r.text
        assert (await enter(api, second, community, name)).status_code == 409
        assert (await enter(api, second, community, "\ufdfa" * 39)).status_code == 201


async def test_a_name_too_long_or_with_control_or_override_characters_is_refused(api: Api) -> None:
    community = await new_community(api)
    sam = await api.signup(join=False)
    r = await enter(api, sam, community, "x" * 41)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    invisible = ["Sa\u034fm", "Sam\ufe0f", "Sam\u180b", "\u3164", "\u2800", "\u0301", "Z" + "\u0301" * 20, "- ."]
    for bad in ["Sam\u202e(rotatilicaf)", "Sam\x07", "Sam\nKay", "\u200b", "Sam\u2066x", "   ", *invisible]:
        r = await enter(api, sam, community, bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", repr(bad)
    r = await enter(api, sam, community, "x" * 40)
    assert r.status_code == 201
    assert (await listed(api, sam))[community]["member"]["name"] == "x" * 40


@pytest.mark.parametrize(
    "name",
    [
        "Sam (facilitator)",
        "ADMIN_jo",
        "Dr Kay",
        "Ｍｏｄｅｒａｔｏｒ",  # fullwidth letters read the same
        "Sam (facili\u200dtator)",  # a joiner is invisible: it must not hide the word
        "Ádmin",  # an accent does not make it another word
        "Mods",
        "Admin1",
        "SysAdmin",
        "Аdmin",  # a Cyrillic А
        "Therapist Jo",
        "HearthBot",
    ],
)
async def test_a_patient_may_not_take_a_name_that_passes_for_staff(api: Api, name: str) -> None:
    community = await new_community(api)
    patient = await api.signup(join=False)
    r = await enter(api, patient, community, name)
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text
    r = await enter(api, patient, community, "Sam")
    assert r.status_code == 201
    r = await api.http.patch(
        f"/api/communities/{community}/members/me", json={"display_name": name}, headers=auth(patient)
    )
    assert r.status_code == 400
    assert (await listed(api, patient))[community]["member"]["name"] == "Sam"


async def test_staff_may_say_so_in_a_name_and_ordinary_words_are_not_refused(api: Api) -> None:
    community = await new_community(api)
    staff = await api.staff("facilitator", join=False)
    r = await enter(api, staff, community, "Sam (facilitator)")
    assert r.status_code == 201 and r.json()["member"] == {
        "id": r.json()["member"]["id"],
        "name": "Sam (facilitator)",
        "role": "facilitator",
    }
    for name in ["Andrew", "Modesto", "Hearthstone fan", "Adminah", "Drew", "Staffordshire Sam", "Sam ❤️", "Nguyễn"]:
        patient = await api.signup(join=False)
        assert (await enter(api, patient, community, name)).status_code == 201, name


async def test_a_rename_shows_in_new_events_and_old_ones_keep_the_old_card(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Renamed while connected: what they send next carries the new name, without joining
    again; what they sent before keeps the card it was sent with, in history and resume."""
    staff = await api.staff()
    room = await api.room(staff)
    sam, kit = await api.signup(), await api.signup()
    cs, ck = await open_client(server, sam), await open_client(server, kit)
    clients += [cs, ck]
    for client in (cs, ck):
        await client.call("join", room=room)
    before = await cs.call("send", room=room, text="before", client_id="b")
    assert (await ck.event("message", room=room))["from"] == {"id": sam.member, "name": sam.name, "role": "patient"}
    community = await api.community()
    r = await api.http.patch(
        f"/api/communities/{community}/members/me", json={"display_name": "Sunny"}, headers=auth(sam)
    )
    assert r.status_code == 200, r.text
    assert r.json()["member"] == {"id": sam.member, "name": "Sunny", "role": "patient"}
    await cs.call("send", room=room, text="after", client_id="a")
    got = await ck.event("message", room=room)
    assert got["text"] == "after" and got["from"] == {"id": sam.member, "name": "Sunny", "role": "patient"}
    history = (await ck.call("history", room=room))["events"]
    by_text = {e["text"]: e["from"]["name"] for e in history if e["ev"] == "message"}
    assert by_text == {"before": sam.name, "after": "Sunny"}
    again = await open_client(server, kit)
    clients.append(again)
    resumed = await again.call("join", room=room, since=before["seq"] - 1)
    assert [e["from"]["name"] for e in resumed["events"]] == [sam.name, "Sunny"]
    # The old name is free again; a name another member holds is not, whatever its case.
    r = await api.http.patch(
        f"/api/communities/{community}/members/me", json={"display_name": sam.name.upper()}, headers=auth(kit)
    )
    assert r.status_code == 200
    r = await api.http.patch(
        f"/api/communities/{community}/members/me", json={"display_name": "sunny"}, headers=auth(kit)
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    r = await api.http.patch(
        f"/api/communities/{community}/members/me", json={"display_name": "sunny"}, headers=auth(sam)
    )
    assert r.status_code == 200 and r.json()["member"]["name"] == "sunny"  # one's own name, in another case
    outsider = await api.signup(join=False)
    r = await api.http.patch(
        f"/api/communities/{community}/members/me", json={"display_name": "Zed"}, headers=auth(outsider)
    )
    assert r.status_code == 404


async def test_an_admin_comes_into_a_community_under_their_name_cut_to_fit_and_made_unique(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Admins are staff everywhere: joining a room of a community they are not in makes them
    a member under their account's name, cut to a display name's 40 characters, and with a
    number when a member holds that name already."""
    community = await new_community(api)
    staff = await api.staff(join=False)
    await api.join(staff, community, "Lee")
    room = await api.room(staff, community=community)
    long_name = "Alexandra Konstantinopoulou-Villanueva of Hearth"
    taken = await api.signup(join=False)
    assert (await enter(api, taken, community, long_name[:40])).status_code == 201
    admin_user = await server.hub.accounts.create_user(f"adm{taken.username}", PASSWORD, long_name, Role.ADMIN)
    r = await api.http.post("/api/login", json={"username": f"adm{taken.username}", "password": PASSWORD})
    admin = Account.signed_in(f"adm{taken.username}", r.json())
    assert admin.id == admin_user.id
    client = await open_client(server, admin)
    clients.append(client)
    joined = await client.call("join", room=room)
    mine = (await listed(api, admin))[community]["member"]
    assert mine["role"] == "admin" and mine in joined["presence"]
    assert mine["name"] == f"{long_name[:36].strip()} 2" and len(mine["name"]) <= 40


# Resolving a member


async def test_staff_resolve_a_member_to_the_account_and_every_reading_is_audited(server: Running, api: Api) -> None:
    community = await api.community()
    staff, patient, sam = await api.staff(), await api.signup(), await api.signup()
    url = f"/api/communities/{community}/members/{sam.member}"
    for _ in range(2):
        r = await api.http.get(url, headers=auth(staff))
        assert r.status_code == 200, r.text
        assert r.json() == {
            "member": {"id": sam.member, "name": sam.name, "role": "patient"},
            "account": {"id": sam.id},
        }
    r = await api.http.get(url, headers=auth(patient))
    assert r.status_code == 403 and sam.id not in r.text
    other = await new_community(api)
    elsewhere = await api.join(sam, other, "Sam elsewhere")
    r = await api.http.get(f"/api/communities/{community}/members/{elsewhere}", headers=auth(staff))
    assert r.status_code == 404 and sam.id not in r.text
    outsider = await api.staff("facilitator", join=False)  # staff, but not of this community
    assert (await api.http.get(url, headers=auth(outsider))).status_code == 403
    rows = await audit(server, "member.account", target=sam.member)
    assert [(row["actor"], row["community_id"]) for row in rows] == [(staff.id, community)] * 2
    assert all(row["at"] > 0 for row in rows)
    assert await audit(server, "member.account", target=elsewhere) == []


async def test_peers_never_see_an_account_id(server: Running, api: Api, clients: list[Client]) -> None:
    """Presence, messages and the join reply name member cards; the account id reaches
    nobody but the account itself."""
    staff = await api.staff()
    room = await api.room(staff)
    sam, kit = await api.signup(), await api.signup()
    cs = await open_client(server, sam)
    clients.append(cs)
    await cs.call("join", room=room)
    await cs.call("send", room=room, text="hi", client_id="h")
    ck = await open_client(server, kit)
    clients.append(ck)
    joined = await ck.call("join", room=room, since=0)
    await cs.call("typing", room=room)
    await ck.event("typing", room=room)
    r = await api.http.get("/api/communities", headers=auth(kit))
    seen = repr((joined, ck.seen(), r.json()))
    assert sam.id not in seen and sam.username not in seen and sam.member in seen


# The group agreement


async def set_agreement(api: Api, actor: Account, community: str, text: str, **more: str) -> httpx.Response:
    return await api.http.put(
        f"/api/communities/{community}/agreement", json={"text": text, **more}, headers=auth(actor)
    )


async def accept(api: Api, account: Account, community: str, version: int, **more: str) -> httpx.Response:
    return await api.http.post(
        f"/api/communities/{community}/agreement/accept", json={"version": version, **more}, headers=auth(account)
    )


async def test_the_group_agreement_is_set_by_staff_and_accepted_before_joining(tmp_path: Path) -> None:
    """Versions 1, 2 by staff; a patient may not set one. A member who has not accepted the
    current version is refused at `join` with the agreement attached; accepting an old or
    unknown version is a conflict; once the current one is accepted, `join` works."""
    async with serving(test_settings(tmp_path)) as (running, api):
        community = await api.community()
        staff, sam = await api.staff(), await api.signup()
        room = await api.room(staff)
        r = await api.http.get(f"/api/communities/{community}/agreement", headers=auth(sam))
        assert r.json() == {"version": 0, "text": "", "accepted": True}  # none set: none required
        r = await set_agreement(api, staff, community, "Be kind.")
        assert r.status_code == 200 and r.json() == {"version": 1}
        r = await set_agreement(api, staff, community, "Be kind. What is said here stays here.")
        assert r.json() == {"version": 2}
        r = await set_agreement(api, sam, community, "Anything goes.")
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = await api.http.get(f"/api/communities/{community}/agreement", headers=auth(sam))
        assert r.json() == {"version": 2, "text": "Be kind. What is said here stays here.", "accepted": False}
        client = await open_client(running, sam)
        try:
            error = await client.error("join", room=room)
            assert error["code"] == "agreement_required"
            assert error["agreement"] == {
                "community": community,
                "version": 2,
                "text": "Be kind. What is said here stays here.",
            }
            for wrong in (1, 3):
                r = await accept(api, sam, community, wrong)
                assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
            assert (await client.error("join", room=room))["code"] == "agreement_required"
            r = await accept(api, sam, community, 2)
            assert r.status_code == 200, r.text
            r = await api.http.get(f"/api/communities/{community}/agreement", headers=auth(sam))
            assert r.json()["accepted"] is True
            await client.call("join", room=room)
            await client.call("send", room=room, text="hello", client_id="x")
        finally:
            await client.close()
        # Everyone accepts it, staff too.
        staff_client = await open_client(running, staff)
        try:
            assert (await staff_client.error("join", room=room))["code"] == "agreement_required"
        finally:
            await staff_client.close()
        rows = await audit(running, "agreement.set", community_id=community)
        assert [(row["actor"], row["reason"]) for row in rows] == [(staff.id, "v1"), (staff.id, "v2")]


async def test_a_new_version_refuses_the_next_join_of_a_member_already_connected(
    server: Running, api: Api, clients: list[Client]
) -> None:
    community = await new_community(api)
    admin = await api.staff("admin", join=False)
    staff = await api.staff(join=False)
    await api.join(staff, community, "Lee")
    room = await api.room(staff, community=community)
    sam = await api.signup(join=False)
    await api.join(sam, community, "Sam")
    assert (await set_agreement(api, staff, community, "One")).json() == {"version": 1}
    assert (await accept(api, sam, community, 1)).status_code == 200
    client = await open_client(server, sam)
    clients.append(client)
    await client.call("join", room=room)
    assert (await set_agreement(api, admin, community, "Two")).json() == {"version": 2}
    # Still in the room: the change asks at the next join.
    await client.call("send", room=room, text="still here", client_id="s")
    error = await client.error("join", room=room)
    assert error["code"] == "agreement_required" and error["agreement"]["version"] == 2
    assert (await accept(api, sam, community, 2)).status_code == 200
    await client.call("join", room=room)


async def test_a_rooms_own_agreement_comes_on_top_of_the_communitys(
    server: Running, api: Api, clients: list[Client]
) -> None:
    community = await new_community(api)
    staff = await api.staff(join=False)
    await api.join(staff, community, "Lee")
    room, other_room = await api.room(staff, community=community), await api.room(staff, community=community)
    sam = await api.signup(join=False)
    await api.join(sam, community, "Sam")
    assert (await set_agreement(api, staff, community, "Community rules")).json() == {"version": 1}
    r = await set_agreement(api, staff, community, "This room's rules", room=room)
    assert r.status_code == 200 and r.json() == {"version": 1, "room": room}
    foreign = await api.room(await api.staff())  # a room of the test community
    r = await set_agreement(api, staff, community, "Not ours", room=foreign)
    assert r.status_code == 404
    client = await open_client(server, sam)
    clients.append(client)
    assert (await client.error("join", room=room))["agreement"] == {
        "community": community,
        "version": 1,
        "text": "Community rules",
    }
    assert (await accept(api, sam, community, 1)).status_code == 200
    await client.call("join", room=other_room)  # no agreement of its own
    error = await client.error("join", room=room)
    assert error["code"] == "agreement_required"
    assert error["agreement"] == {"community": community, "room": room, "version": 1, "text": "This room's rules"}
    r = await api.http.get(f"/api/communities/{community}/agreement", params={"room": room}, headers=auth(sam))
    assert r.json() == {"version": 1, "text": "This room's rules", "accepted": False}
    assert (await accept(api, sam, community, 2, room=room)).status_code == 409
    assert (await accept(api, sam, community, 1, room=room)).status_code == 200
    await client.call("join", room=room)
    rows = await audit(server, "agreement.set", community_id=community)
    assert [row["room_id"] for row in rows] == [None, room]


# PostgreSQL: the audit log is append-only


async def test_postgresql_refuses_to_update_or_delete_the_audit_log(tmp_path: Path, postgres_url: str) -> None:
    """Whoever asks, with whatever SQL: the trigger the migration installs refuses both, and
    the row stays as it was."""
    settings = test_settings(tmp_path).with_(database_url=normalise_db_url(postgres_url))
    async with serving(settings) as (running, api):
        staff, sam = await api.staff(), await api.signup()
        community = await api.community()
        r = await api.http.get(f"/api/communities/{community}/members/{sam.member}", headers=auth(staff))
        assert r.status_code == 200
        (row,) = await audit(running, "member.account", target=sam.member)
        engines = running.hub.audit.engines  # type: ignore[attr-defined]
        for statement in (
            "UPDATE audit_log SET actor = 'u_nobody' WHERE id = :id",
            "DELETE FROM audit_log WHERE id = :id",
            "DELETE FROM audit_log",
        ):
            with pytest.raises(DBAPIError, match="append-only"):
                async with engines.writer.begin() as conn:
                    await conn.execute(text(statement), {"id": row["id"]})
        assert await audit(running, "member.account", target=sam.member) == [row]


# The migration from rooms without communities

SAM, KAY, LEE = "u_00000000sam0", "u_00000000kay0", "u_00000000lee0"
GROUP = "r_00000group0"
WAITING = {"action": "waiting", "user": SAM, "card": {"id": SAM, "name": "Sam", "role": "patient"}, "to": [SAM]}
OPENED = {
    "action": "opened",
    "key": "k1",
    "title": "Tuesday",
    "starts_at": "2026-01-06T19:00:00.000Z",
    "ends_at": "2026-01-06T20:00:00.000Z",
    "agreement": "",
    "facilitators": [LEE],
    "capacity": None,
    "auto_admit": False,
    "registered": [KAY],
    "present": [KAY],
}
# (sender, name, role, kind, body) of the group's events, seq 1 on
EVENTS = [
    (SAM, "Sam", "patient", "message", {"text": "hello"}),
    (KAY, "SAM", "caregiver", "message", {"text": "hi Sam"}),
    (LEE, "Lee", "facilitator", "session", OPENED),
    (SAM, "Sam", "patient", "session", WAITING),
    (LEE, "Lee", "facilitator", "session", {"action": "admitted", "users": [SAM]}),
    (SAM, "Sam", "patient", "session", {"action": "hand", "user": SAM, "up": True}),
    (LEE, "Lee", "facilitator", "session", {"action": "ended"}),
]


async def _fill_revision_0003(engines: Engines) -> None:
    """Accounts (two named alike), a group and a drop-in room, and the group's messages and
    session events, as Hearth stored them before communities: naming accounts."""
    now = 1_767_000_000_000_000
    hashed = PasswordHasher(time_cost=1, memory_cost=1024).hash(PASSWORD)
    people = [(SAM, "sam_k", "Sam", "patient"), (KAY, "kay", "SAM", "caregiver"), (LEE, "lee", "Lee", "facilitator")]
    statements = [
        (
            "INSERT INTO users (id, username, display_name, role, password_hash, created_at)"
            " VALUES (:id, :username, :name, :role, :hash, :at)",
            [
                {"id": u, "username": login, "name": name, "role": role, "hash": hashed, "at": now + n}
                for n, (u, login, name, role) in enumerate(people)
            ],
        ),
        (
            "INSERT INTO rooms (id, name, kind, last_seq, created_by, created_at)"
            " VALUES (:id, :kind, :kind, :seq, :by, :at)",
            [
                {"id": GROUP, "kind": "group", "seq": len(EVENTS), "by": LEE, "at": now},
                {"id": "r_00000drop00", "kind": "drop_in", "seq": 0, "by": LEE, "at": now},
            ],
        ),
        (
            f"INSERT INTO room_members (room_id, user_id, role, added_at) VALUES ('{GROUP}', :user, :role, :at)",
            [
                {"user": u, "role": role, "at": now}
                for u, role in ((LEE, "facilitator"), (SAM, "member"), (KAY, "member"))
            ],
        ),
        (
            "INSERT INTO events (room_id, seq, kind, sender_id, sender_name, sender_role, client_id, ts, body)"
            f" VALUES ('{GROUP}', :seq, :kind, :sender, :name, :role, :client_id, :ts, :body)",
            [
                {
                    "seq": seq,
                    "kind": kind,
                    "sender": sender,
                    "name": name,
                    "role": role,
                    "client_id": f"c{seq}" if kind == "message" else None,
                    "ts": now + seq,
                    "body": orjson.dumps(body).decode(),
                }
                for seq, (sender, name, role, kind, body) in enumerate(EVENTS, start=1)
            ],
        ),
    ]
    async with engines.writer.begin() as conn:
        for sql, rows in statements:
            await conn.execute(text(sql), rows)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_database_of_revision_0003_is_upgraded_into_one_community(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """Rooms, accounts, messages and session events made before communities: after the
    upgrade, every room is in one open community "General", every account has a card there
    (two names that read the same made apart with a number), and stored events name member
    ids wherever they named accounts: `from`, and who a session event is about or for."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hearth.db'}"
    if backend == "postgres":
        url = normalise_db_url(request.getfixturevalue("postgres_url"))
    engines = open_engines(url)
    try:
        await upgrade(engines, "0003")
        await _fill_revision_0003(engines)
        await upgrade(engines)
        async with engines.reader.connect() as conn:
            (community,) = (await conn.execute(text("SELECT id, name, join_policy FROM communities"))).all()
            rooms = (await conn.execute(text("SELECT community_id FROM rooms"))).scalars().all()
            members = (await conn.execute(text("SELECT id, user_id, display_name, community_id FROM members"))).all()
            stored = (await conn.execute(text("SELECT sender_id, body FROM events ORDER BY seq"))).all()
    finally:
        await engines.dispose()
    assert (community.name, community.join_policy) == ("General", "open") and rooms == [community.id] * 2
    assert {row.user_id: (row.display_name, row.community_id) for row in members} == {
        SAM: ("Sam", community.id),
        KAY: ("SAM 2", community.id),
        LEE: ("Lee", community.id),
    }
    member = {row.user_id: row.id for row in members}
    assert all(m.startswith("m_") for m in member.values())
    assert [sender for sender, _ in stored] == [member[sender] for sender, *_ in EVENTS]
    assert "u_" not in repr(stored)
    card = {**WAITING["card"], "id": member[SAM]}  # type: ignore[dict-item]
    assert orjson.loads(stored[3].body) == {**WAITING, "user": member[SAM], "card": card, "to": [member[SAM]]}

    # What Sam sees of it, signed in to a server on the upgraded store.
    settings = test_settings(tmp_path)
    if backend == "postgres":
        settings = settings.with_(database_url=url)
    async with serving(settings) as (running, api):
        r = await api.http.post("/api/login", json={"username": "sam_k", "password": PASSWORD})
        account = Account.signed_in("sam_k", r.json())
        (general,) = (await listed(api, account)).values()
        assert general["member"] == {"id": member[SAM], "name": "Sam", "role": "patient"}
        client = await open_client(running, account)
        try:
            joined = await client.call("join", room=GROUP, since=0)
        finally:
            await client.close()
        shown = joined["events"]
        assert [e["from"]["id"] for e in shown[:2]] == [member[SAM], member[KAY]]
        assert [e["from"]["name"] for e in shown[:2]] == ["Sam", "SAM"]  # as they were sent
        assert [e.get("action") for e in shown[2:]] == ["opened", "waiting", "admitted", "hand", "ended"]
        assert shown[3]["to"] == [member[SAM]]  # private to Sam: shown to Sam, by member id
        assert shown[5]["user"] == member[SAM] and "u_" not in repr(shown)


async def test_naming_a_room_member_by_account_is_audited_as_reading_their_account(server: Running, api: Api) -> None:
    """A facilitator who adds someone to a room by account id learns their card: the log
    says who linked which card, in which room; adding by member id reads no account."""
    lead = await api.staff()
    room = await api.room(lead, kind="group")
    sam, kit = await api.signup(), await api.signup()
    r = await api.http.post(f"/api/rooms/{room}/members", json={"user": sam.id}, headers=auth(lead))
    assert r.status_code == 201 and r.json()["member"]["id"] == sam.member
    r = await api.http.post(f"/api/rooms/{room}/members", json={"member": kit.member}, headers=auth(lead))
    assert r.status_code == 201
    (row,) = await audit(server, "member.account", target=sam.member)
    assert (row["actor"], row["room_id"]) == (lead.id, room)
    assert await audit(server, "member.account", target=kit.member) == []


async def test_the_audit_log_is_read_newest_first_by_admins_and_the_communitys_clinicians(api: Api) -> None:
    community = await new_community(api)
    admin = await api.staff("admin", join=False)
    clinician, facilitator, patient = (
        await api.staff("clinician", join=False),
        await api.staff(join=False),
        await api.signup(join=False),
    )
    for who, name in ((clinician, "Dr Lee"), (facilitator, "Fay"), (patient, "Pat")):
        assert (await enter(api, who, community, name)).status_code == 201
    r = await api.http.put(
        f"/api/communities/{community}/agreement", json={"text": "Be kind."}, headers=auth(facilitator)
    )
    assert r.status_code == 200
    pat = (await listed(api, patient))[community]["member"]["id"]
    for _ in range(3):
        assert (
            await api.http.get(f"/api/communities/{community}/members/{pat}", headers=auth(clinician))
        ).status_code == 200
    r = await api.http.get("/api/audit", params={"community": community, "limit": 2}, headers=auth(clinician))
    assert r.status_code == 200, r.text
    first = r.json()["entries"]
    assert [e["action"] for e in first] == ["member.account", "member.account"]
    assert first[0]["id"] > first[1]["id"] and first[0]["target"] == pat
    r = await api.http.get("/api/audit", params={"community": community, "before": first[1]["id"]}, headers=auth(admin))
    rest = [e["action"] for e in r.json()["entries"]]
    assert rest[:2] == ["member.account", "agreement.set"] and "community.create" in rest
    assert (
        await api.http.get("/api/audit", params={"community": community}, headers=auth(facilitator))
    ).status_code == 403
    assert (await api.http.get("/api/audit", params={"community": community}, headers=auth(patient))).status_code == 403
    assert (await api.http.get("/api/audit", headers=auth(clinician))).status_code == 403  # all of it: admins only
    assert (await api.http.get("/api/audit", headers=auth(admin))).status_code == 200
    for bad in ({"limit": "0"}, {"limit": "501"}, {"before": "x"}, {"limit": "-1"}):
        r = await api.http.get("/api/audit", params={"community": community, **bad}, headers=auth(admin))
        assert r.status_code == 400, bad
    assert (await api.http.get("/api/audit", params={"community": "c_nothing"}, headers=auth(admin))).status_code == 404
