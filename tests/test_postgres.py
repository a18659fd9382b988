"""The same store on PostgreSQL: migrations, order, idempotency, edits and resume from the store."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

from server.settings import normalise_db_url
from tests.conftest import (
    ServerProcess,
    auth,
    open_client,
    process_account,
    process_room,
    serving,
    test_settings,
)


async def test_the_core_runs_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """Migrated from empty, PostgreSQL gives gap-free order, idempotent sends, redaction and resume."""
    settings = test_settings(tmp_path, rate=5000.0, burst=5000.0).with_(database_url=normalise_db_url(postgres_url))
    async with serving(settings) as (running, api):
        staff = await api.staff()
        room = await api.room(staff, kind="group")
        a, b = await api.signup(), await api.signup()
        for member in (a, b):
            assert (await api.add_member(staff, room, member)).status_code == 201
        ca, cb = await open_client(running, a), await open_client(running, b, "hearth.v1.msgpack")
        await ca.call("join", room=room)
        await cb.call("join", room=room)

        async def burst(client, tag):  # type: ignore[no-untyped-def]
            replies = await asyncio.gather(
                *(client.call("send", room=room, text=f"{tag}{i}", client_id=f"{tag}{i}") for i in range(200))
            )
            return [r["seq"] for r in replies]

        seqs = await asyncio.gather(burst(ca, "a"), burst(cb, "b"))
        assert sorted(seqs[0] + seqs[1]) == list(range(1, 401))
        assert await ca.call("send", room=room, text="a0", client_id="a0") == {
            "seq": seqs[0][0],
            "ts": (await ca.call("history", room=room, before=seqs[0][0] + 1, limit=1))["events"][0]["ts"],
        }
        await ca.call("edit", room=room, target=seqs[0][1], text="changed")
        await ca.call("delete", room=room, target=seqs[0][2])
        await cb.close()
        await ca.call("leave", room=room)  # nobody left: resume must come from the store
        back = await open_client(running, b)
        joined = await back.call("join", room=room, since=0)
        by_seq = {e["seq"]: e for e in joined["events"]}
        assert sorted(by_seq) == list(range(1, 403)) and joined["recovered"] is True
        assert by_seq[seqs[0][1]]["text"] == "changed" and by_seq[seqs[0][2]]["deleted"] is True
        await back.close()
        await ca.close()


async def test_hearth_migrate_prepares_postgresql_for_production_workers(
    tmp_path: Path, processes: list[ServerProcess], postgres_url: str
) -> None:
    """`hearth migrate` on an empty database, then a production worker (no auto-migration) serves."""
    proc = ServerProcess(tmp_path, DATABASE_URL=postgres_url, HEARTH_ENV="production")
    assert "up to date" in await proc.hearth("migrate")
    assert "up to date" in await proc.hearth("migrate")  # again: nothing to do
    processes.append(await proc.start())
    staff = await process_account(proc, "facilitator")
    room = await process_room(proc, staff)
    client = await open_client(proc, staff)
    assert (await client.call("join", room=room))["seq"] == 0
    await client.close()


async def test_ids_that_name_nothing_get_404_not_500_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """A NUL byte (which PostgreSQL's text cannot hold) or 10 KB in an id, in a path or a
    body, names nothing: 404, or 400 where the body's id is malformed, never a 500."""
    settings = test_settings(tmp_path).with_(database_url=normalise_db_url(postgres_url))
    async with serving(settings) as (running, api):
        staff = await api.staff()
        community = await api.community()
        room = await api.room(staff)
        for bad in ("\x00", "x" * 10_000, "r_\u00e9"):
            for path in (
                f"/api/communities/{quote(bad)}/agreement",
                f"/api/communities/{community}/members/{quote(bad)}",
            ):
                r = await api.http.get(path, headers=auth(staff))
                assert r.status_code == 404, (path[:40], r.status_code, r.text[:200])
            r = await api.http.put(
                f"/api/communities/{community}/agreement", json={"text": "Be kind.", "room": bad}, headers=auth(staff)
            )
            assert r.status_code in (400, 404), r.text[:200]
            r = await api.http.post(
                f"/api/communities/{community}/members", json={"user": bad, "display_name": "X"}, headers=auth(staff)
            )
            assert r.status_code in (400, 404), r.text[:200]
            r = await api.http.post(f"/api/rooms/{room}/members", json={"member": bad}, headers=auth(staff))
            assert r.status_code in (400, 404), r.text[:200]
