"""The guarantees of ARCHITECTURE.md: order, no loss on resume, durability, idempotency."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.settings import normalise_db_url
from tests.conftest import (
    TIMEOUT,
    Api,
    Client,
    Running,
    ServerProcess,
    open_client,
    process_account,
    process_room,
    start_server,
    test_settings,
)


@pytest.fixture(params=["sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path, server: Running) -> AsyncIterator[Running]:
    """The shared SQLite server, or a server of this test's own on a fresh PostgreSQL database."""
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


async def _send_many(client: Client, room: str, count: int, tag: str) -> list[int]:
    """Send `count` messages without waiting between them; return the acknowledged seqs."""
    replies = await asyncio.gather(
        *(client.call("send", room=room, text=f"{tag} {i}", client_id=f"{tag}-{i}") for i in range(count))
    )
    return [r["seq"] for r in replies]


async def test_two_senders_get_one_gap_free_order_seen_the_same_by_all(
    any_store: Running, store_api: Api, clients: list[Client]
) -> None:
    """Two clients sending 500 messages each at once get seqs 1..1000 once each; all members agree."""
    server, api = any_store, store_api
    staff = await api.staff()
    room = await api.room(staff)
    a, b, watcher = await api.signup(), await api.signup(), await api.signup()
    ca = await open_client(server, a, "hearth.v1.json")
    cb = await open_client(server, b, "hearth.v1.msgpack")
    cw = await open_client(server, watcher, "hearth.v1.json")
    clients += [ca, cb, cw]
    for c in (ca, cb, cw):
        await c.call("join", room=room)
    seqs_a, seqs_b = await asyncio.gather(_send_many(ca, room, 500, "a"), _send_many(cb, room, 500, "b"))
    assert sorted(seqs_a + seqs_b) == list(range(1, 1001))
    seen = [await c.messages(room, 1000) for c in (ca, cb, cw)]
    orders = [[(e["seq"], e["text"]) for e in events] for events in seen]
    assert orders[0] == orders[1] == orders[2]
    assert [seq for seq, _ in orders[0]] == list(range(1, 1001))
    # Each sender's own messages keep the order in which it sent them.
    assert [t for _, t in orders[0] if t.startswith("a ")] == [f"a {i}" for i in range(500)]
    assert [t for _, t in orders[0] if t.startswith("b ")] == [f"b {i}" for i in range(500)]


@pytest.mark.parametrize("others_stay", [True, False], ids=["from-memory", "from-store"])
async def test_resume_returns_exactly_the_missed_events_in_order(
    server: Running, api: Api, clients: list[Client], encoding: str, others_stay: bool
) -> None:
    """A client that drops while 500 messages, edits and deletions go by gets exactly those on rejoin."""
    staff = await api.staff()
    room = await api.room(staff)
    reader, writer = await api.signup(), await api.signup()
    cr, cw = await open_client(server, reader, encoding), await open_client(server, writer, encoding)
    clients.append(cw)
    await cr.call("join", room=room)
    await cw.call("join", room=room)
    last_seen = (await cw.call("send", room=room, text="before", client_id="before"))["seq"]
    await cr.messages(room, 1)
    await cr.close()
    if not others_stay:  # nobody left on the worker: the room's feed and its memory are gone
        await cw.call("leave", room=room)
        await cw.call("join", room=room)
    seqs = await _send_many(cw, room, 500, "m")
    edit = await cw.call("edit", room=room, target=seqs[10], text="m 10, edited")
    delete = await cw.call("delete", room=room, target=seqs[20])
    back = await open_client(server, reader, encoding)
    clients.append(back)
    joined = await back.call("join", room=room, since=last_seen)
    events = joined["events"]
    assert joined["recovered"] is True and joined["seq"] == delete["seq"]
    assert [e["seq"] for e in events] == list(range(last_seen + 1, delete["seq"] + 1))
    assert events[-2]["ev"] == "edit" and events[-2]["seq"] == edit["seq"] and events[-2]["target"] == seqs[10]
    assert events[-1]["ev"] == "delete" and events[-1]["target"] == seqs[20]
    assert [e for e in events if e.get("text") == "m 20"] == []  # the deleted text is not handed out again
    after = await cw.call("send", room=room, text="welcome back", client_id="after")
    assert [e["seq"] for e in await back.messages(room, 1)] == [after["seq"]]


async def test_resume_while_the_room_is_busy_has_no_gap_and_no_duplicate(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Rejoining with `since` while others keep sending: join events plus live events are gap-free."""
    staff = await api.staff()
    room = await api.room(staff)
    reader, writer = await api.signup(), await api.signup()
    cw = await open_client(server, writer)
    clients.append(cw)
    await cw.call("join", room=room)
    await _send_many(cw, room, 50, "old")
    for rejoin in range(5):  # 760 missed at most: within the 1,000 events a join returns (`resume_max`)
        busy = asyncio.create_task(_send_many(cw, room, 150, f"busy{rejoin}"))
        cr = await open_client(server, reader)
        joined = await cr.call("join", room=room, since=10 * rejoin)
        final = max(await busy)
        seqs = [e["seq"] for e in joined["events"]]
        live = [e["seq"] for e in await cr.messages(room, final - joined["seq"])]
        assert seqs + live == list(range(10 * rejoin + 1, final + 1))
        await cr.close()


async def test_a_storm_of_resumes_into_a_fresh_feed_gets_exactly_the_missed_events(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Once the room's last member on the worker has left, the worker no longer holds its recent
    events. Thirty clients then resume at once, from far apart, while the room keeps going:
    each gets exactly what it missed, with edits and deletions as they now stand, then live."""
    staff = await api.staff()
    room = await api.room(staff)
    writer, readers = await api.signup(), [await api.signup() for _ in range(3)]
    cw = await open_client(server, writer, "hearth.v1.msgpack")
    clients.append(cw)
    await cw.call("join", room=room)
    seqs = await _send_many(cw, room, 150, "m")
    await cw.call("edit", room=room, target=seqs[120], text="m 120, edited")
    await cw.call("delete", room=room, target=seqs[121])
    await cw.call("leave", room=room)  # nobody left in the room on this worker
    await cw.call("join", room=room)
    busy = asyncio.create_task(_send_many(cw, room, 100, "busy"))
    resumers = [await open_client(server, readers[i % 3], "hearth.v1.json") for i in range(30)]
    clients.extend(resumers)
    since = [(0, 5, 60, 110, 119, 140)[i % 6] for i in range(30)]
    joined = await asyncio.gather(*(c.call("join", room=room, since=s) for c, s in zip(resumers, since, strict=True)))
    final = max(await busy)
    for client, after, got in zip(resumers, since, joined, strict=True):
        events = got["events"]
        live = await client.messages(room, final - got["seq"])
        assert got["recovered"] is True
        assert [e["seq"] for e in events + live] == list(range(after + 1, final + 1))
        texts = {e["seq"]: e.get("text") for e in events if e["ev"] == "message"}
        if after < seqs[120]:
            assert texts[seqs[120]] == "m 120, edited" and texts[seqs[121]] is None
    # An edit of a message that came back from the store reaches the next resume too.
    await cw.call("edit", room=room, target=seqs[100], text="m 100, edited")
    late = await open_client(server, writer)
    clients.append(late)
    events = (await late.call("join", room=room, since=90))["events"]
    assert {e["seq"]: e.get("text") for e in events}[seqs[100]] == "m 100, edited"


async def test_resume_too_far_back_says_not_recovered_and_returns_the_latest(
    tmp_path: Path, clients: list[Client]
) -> None:
    """When more events were missed than a join returns, `recovered` is false and the newest come back."""
    running = await start_server(test_settings(tmp_path, resume_max=50, ring=64, rate=2000.0, burst=2000.0))
    try:
        api = Api(running)
        staff = await api.staff()
        room = await api.room(staff)
        a = await api.signup()
        ca = await open_client(running, a)
        clients.append(ca)
        await ca.call("join", room=room)
        seqs = [(await ca.call("send", room=room, text=f"{i}", client_id=f"r{i}"))["seq"] for i in range(80)]
        back = await open_client(running, a)
        clients.append(back)
        joined = await back.call("join", room=room, since=5)
        assert joined["recovered"] is False
        assert [e["seq"] for e in joined["events"]] == seqs[-50:]
        near = await back.call("join", room=room, since=seqs[-40])
        assert near["recovered"] is True and [e["seq"] for e in near["events"]] == seqs[-39:]
        await api.aclose()
    finally:
        await running.stop()


async def test_a_retried_send_returns_the_first_seq_and_stores_once(
    any_store: Running, store_api: Api, clients: list[Client], encoding: str
) -> None:
    """The same client_id sent again, even after a reconnect, gets the same seq and no new event."""
    server, api = any_store, store_api
    staff = await api.staff()
    room = await api.room(staff)
    a = await api.signup()
    ca = await open_client(server, a, encoding)
    await ca.call("join", room=room)
    first = await ca.call("send", room=room, text="only once", client_id="retry-me")
    both = await asyncio.gather(*(ca.call("send", room=room, text="only once", client_id="twice") for _ in range(2)))
    assert both[0] == both[1]
    await ca.close()
    again = await open_client(server, a, encoding)
    clients.append(again)
    await again.call("join", room=room)
    assert await again.call("send", room=room, text="only once", client_id="retry-me") == first
    history = (await again.call("history", room=room))["events"]
    assert [e["client_id"] for e in history] == ["retry-me", "twice"]
    other = await api.signup()
    co = await open_client(server, other, encoding)
    clients.append(co)
    await co.call("join", room=room)
    # Another user may use the same client_id: ids are per sender.
    assert (await co.call("send", room=room, text="mine", client_id="retry-me"))["seq"] == both[0]["seq"] + 1


async def test_a_burst_of_retries_among_new_sends_gets_the_first_seqs_back(
    any_store: Running, store_api: Api, clients: list[Client], encoding: str
) -> None:
    """Hundreds of sends at once, half of them retries of stored ones (more keys than one
    idempotency probe holds): each retry gets its first seq, each new send a new one."""
    server, api = any_store, store_api
    staff = await api.staff()
    room = await api.room(staff)
    client = await open_client(server, await api.signup(), encoding)
    clients.append(client)
    await client.call("join", room=room)

    async def send(ids: range) -> dict[int, int]:
        replies = await asyncio.gather(*(client.call("send", room=room, text=f"m{i}", client_id=f"c{i}") for i in ids))
        return {i: reply["seq"] for i, reply in zip(ids, replies, strict=True)}

    first = await send(range(300))
    mixed = await send(range(150, 450))
    assert {i: mixed[i] for i in range(150, 300)} == {i: first[i] for i in range(150, 300)}
    assert sorted(mixed[i] for i in range(300, 450)) == list(range(301, 451))
    # 450 events stored, each once: the next send gets seq 451, and history ends with seqs 352..451.
    assert (await client.call("send", room=room, text="next", client_id="next"))["seq"] == 451
    by_seq = {seq: f"c{i}" for i, seq in {**first, **mixed}.items()} | {451: "next"}
    history = (await client.call("history", room=room, limit=100))["events"]
    assert [(e["seq"], e["client_id"]) for e in history] == [(seq, by_seq[seq]) for seq in range(352, 452)]


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_acknowledged_messages_survive_kill_9(
    tmp_path: Path, processes: list[ServerProcess], store: str, request: pytest.FixtureRequest
) -> None:
    """Kill -9 the server right after acks: after a restart on the same database, history has every acked seq."""
    env = {"DATABASE_URL": request.getfixturevalue("postgres_url")} if store == "postgres" else {}
    proc = await ServerProcess(tmp_path, **env).start()
    processes.append(proc)
    staff = await process_account(proc, "facilitator")
    room = await process_room(proc, staff)
    sender = await process_account(proc)
    client = await open_client(proc, sender)
    await client.call("join", room=room)
    acked: dict[int, str] = {}
    busy = asyncio.Event()

    async def send(i: int) -> None:
        reply = await client.request("send", room=room, text=f"kept {i}", client_id=f"k{i}")
        if "result" in reply:
            acked[reply["result"]["seq"]] = f"kept {i}"
        if len(acked) >= 150:
            busy.set()

    tasks = [asyncio.create_task(send(i)) for i in range(400)]
    await asyncio.wait_for(busy.wait(), 6 * TIMEOUT)  # 150 acked: kill it while the rest are on their way
    assert await proc.signal(signal.SIGKILL) == -signal.SIGKILL
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    await proc.start()
    back = await open_client(proc, sender)
    await back.call("join", room=room)
    stored: dict[int, str] = {}
    before = None
    while True:
        page = (await back.call("history", room=room, limit=100, **({"before": before} if before else {})))["events"]
        stored.update({e["seq"]: e["text"] for e in page})
        if len(page) < 100:
            break
        before = page[0]["seq"]
    assert acked and all(stored.get(seq) == text for seq, text in acked.items())
    assert sorted(stored) == list(range(1, len(stored) + 1))
    await back.close()


async def test_sigterm_acknowledges_pending_sends_then_closes_with_1012(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """On SIGTERM every send already received is committed and acknowledged before close 1012."""
    proc = await ServerProcess(tmp_path).start()
    processes.append(proc)
    staff = await process_account(proc, "facilitator")
    room = await process_room(proc, staff)
    sender = await process_account(proc)
    client = await open_client(proc, sender, "hearth.v1.msgpack")
    await client.call("join", room=room)
    sends = [asyncio.create_task(client.request("send", room=room, text=f"{i}", client_id=f"s{i}")) for i in range(200)]
    await asyncio.wait(sends, return_when=asyncio.FIRST_COMPLETED)
    stopping = asyncio.create_task(proc.signal(signal.SIGTERM))
    assert await client.close_code() == 1012
    replies = await asyncio.gather(*sends, return_exceptions=True)
    assert await stopping in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    answered = [r for r in replies if isinstance(r, dict)]
    acked = {r["result"]["seq"] for r in answered if "result" in r}
    refused = [r["error"]["code"] for r in answered if "error" in r]
    assert acked and set(refused) <= {"unavailable"}
    # After a restart, the store holds exactly the acknowledged sends: none committed without its ack.
    await proc.start()
    back = await open_client(proc, sender)
    await back.call("join", room=room)
    history = (await back.call("history", room=room, limit=100))["events"]
    history += (
        (await back.call("history", room=room, limit=100, before=history[0]["seq"]))["events"]
        if len(history) == 100
        else []
    )
    assert {e["seq"] for e in history} == acked
    await back.close()
    await client.close()
