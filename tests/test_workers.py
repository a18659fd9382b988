"""Many workers on Redis and PostgreSQL: one order, nothing lost, even when something dies."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import (
    TIMEOUT,
    UNIT,
    Account,
    Client,
    RedisProcess,
    ServerProcess,
    TcpProxy,
    auth,
    eventually,
    open_client,
    process_account,
    process_room,
    record_figure,
)

PRESENCE_TTL = 3.0  # seconds: a dead worker's users must be gone from presence within this and a sweep


@dataclass
class Cluster:
    workers: list[ServerProcess]
    clients: list[Client]

    async def client(self, worker: int, account: Account, encoding: str = "hearth.v1.json") -> Client:
        client = await open_client(self.workers[worker], account, encoding)
        self.clients.append(client)
        return client


async def start_cluster(
    tmp_path: Path, count: int, *, redis_url: str, prefix: str, database_url: str, presence_ttl: float = PRESENCE_TTL
) -> Cluster:
    env = {
        "REDIS_URL": redis_url,
        "HEARTH_REDIS_PREFIX": prefix,
        "DATABASE_URL": database_url,
        "HEARTH_PRESENCE_TTL": str(presence_ttl),
        "HEARTH_SCHEDULER_INTERVAL": "0.3",
    }
    workers = [ServerProcess(tmp_path, **env) for _ in range(count)]
    await asyncio.gather(*(w.start() for w in workers))
    return Cluster(workers, [])


@pytest.fixture
async def cluster(tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str) -> AsyncIterator[Cluster]:
    running = await start_cluster(tmp_path, 2, redis_url=redis_url, prefix=redis_prefix, database_url=postgres_url)
    yield running
    await _stop(running)


async def _stop(cluster: Cluster) -> None:
    for client in cluster.clients:
        await client.close()
    for worker in cluster.workers:
        await worker.stop()


async def _send_many(client: Client, room: str, count: int, tag: str) -> list[int]:
    replies = await asyncio.gather(
        *(client.call("send", room=room, text=f"{tag} {i}", client_id=f"{tag}-{i}") for i in range(count))
    )
    return [r["seq"] for r in replies]


async def _setup(cluster: Cluster, members: int) -> tuple[str, list[Account]]:
    staff = await process_account(cluster.workers[0], "facilitator")
    room = await process_room(cluster.workers[0], staff)
    accounts = [await process_account(cluster.workers[i % len(cluster.workers)]) for i in range(members)]
    return room, accounts


async def test_clients_on_different_workers_see_one_and_the_same_order(cluster: Cluster) -> None:
    """Senders on two workers, 300 messages each at once: everyone sees seqs 1..600 in one order."""
    room, (a, b, c, d) = await _setup(cluster, 4)
    ca, cb = await cluster.client(0, a), await cluster.client(1, b, "hearth.v1.msgpack")
    cc, cd = await cluster.client(0, c), await cluster.client(1, d)
    for client in (ca, cb, cc, cd):
        await client.call("join", room=room)
    sa, sb = await asyncio.gather(_send_many(ca, room, 300, "a"), _send_many(cb, room, 300, "b"))
    assert sorted(sa + sb) == list(range(1, 601))
    seen = [[(e["seq"], e["text"]) for e in await c.messages(room, 600)] for c in (ca, cb, cc, cd)]
    assert seen[0] == seen[1] == seen[2] == seen[3]
    assert [seq for seq, _ in seen[0]] == list(range(1, 601))


async def test_resume_on_another_worker_returns_exactly_the_missed_events(cluster: Cluster) -> None:
    """Drop from worker 1, rejoin on worker 2 with since: the missed events, edits and deletions, in order."""
    room, (reader, writer) = await _setup(cluster, 2)
    cr, cw = await cluster.client(0, reader), await cluster.client(1, writer)
    await cr.call("join", room=room)
    await cw.call("join", room=room)
    seen = (await cw.call("send", room=room, text="before", client_id="before"))["seq"]
    await cr.messages(room, 1)
    await cr.close()
    seqs = await _send_many(cw, room, 200, "m")
    edit = await cw.call("edit", room=room, target=seqs[0], text="m 0, edited")
    delete = await cw.call("delete", room=room, target=seqs[1])
    for worker in (1, 0):  # on the writer's worker, and back on the first one
        back = await cluster.client(worker, reader)
        joined = await back.call("join", room=room, since=seen)
        assert joined["recovered"] is True
        assert [e["seq"] for e in joined["events"]] == list(range(seen + 1, delete["seq"] + 1))
        assert joined["events"][-2]["seq"] == edit["seq"] and joined["events"][-1]["ev"] == "delete"
    live = await cw.call("send", room=room, text="and now", client_id="now")
    assert [e["seq"] for e in await back.messages(room, 1)] == [live["seq"]]


async def test_kill_9_of_a_worker_loses_no_acknowledged_message_and_its_users_leave_presence(
    cluster: Cluster,
) -> None:
    """A worker killed mid-traffic: survivors see every acked event once, in order; its users leave presence."""
    room, (doomed_user, survivor, watcher) = await _setup(cluster, 3)
    doomed = await cluster.client(0, doomed_user)
    sender, watch = await cluster.client(1, survivor), await cluster.client(1, watcher)
    for client in (doomed, sender, watch):
        await client.call("join", room=room)
    acked: set[int] = set()
    busy = asyncio.Event()

    async def keep_sending(client: Client, tag: str, count: int) -> None:
        for i in range(count):
            try:
                reply = await client.request("send", room=room, text=f"{tag} {i}", client_id=f"{tag}{i}")
            except ConnectionClosed:
                assert client is doomed, "a connection to the surviving worker closed"
                return  # the connection died with its worker
            if "result" in reply:
                acked.add(reply["result"]["seq"])
            if len(acked) >= 150:
                busy.set()

    doomed_task = asyncio.create_task(keep_sending(doomed, "d", 400))
    survivor_task = asyncio.create_task(keep_sending(sender, "s", 300))
    await asyncio.wait_for(busy.wait(), 6 * TIMEOUT)
    await cluster.workers[0].signal(signal.SIGKILL)
    await asyncio.gather(doomed_task, survivor_task)
    last = await sender.call("send", room=room, text="after the crash", client_id="after")
    acked.add(last["seq"])
    seqs = []
    left_at = None
    async with asyncio.timeout(6 * TIMEOUT):
        while not seqs or seqs[-1] < last["seq"] or left_at is None:
            event = await watch.event(room=room)
            if "seq" in event:
                seqs.append(event["seq"])
            elif event["ev"] == "presence" and [u["id"] for u in event["left"]] == [doomed_user.member]:
                left_at = asyncio.get_running_loop().time()
    assert seqs == list(range(seqs[0], last["seq"] + 1)), "a gap or a duplicate"
    assert acked <= set(range(1, last["seq"] + 1)) and seqs[0] == 1
    newcomer = await cluster.client(1, await process_account(cluster.workers[1]))
    present = (await newcomer.call("join", room=room))["presence"]
    assert doomed_user.member not in [u["id"] for u in present]


async def test_presence_is_shared_and_a_graceful_leave_is_seen_at_once(cluster: Cluster) -> None:
    """Users on two workers see each other once (however many devices), and each other typing; a leave
    shows within 2 s."""
    room, (sam, jo) = await _setup(cluster, 2)
    phone, laptop = await cluster.client(0, sam), await cluster.client(1, sam)
    other = await cluster.client(1, jo)
    await phone.call("join", room=room)
    await laptop.call("join", room=room)
    joined = await other.call("join", room=room)
    assert sorted(u["id"] for u in joined["presence"]) == sorted([sam.member, jo.member])
    await other.call("typing", room=room)  # on worker 2; Sam's phone is on worker 1
    assert (await phone.event("typing", room=room))["user"]["id"] == jo.member
    await phone.call("leave", room=room)
    await laptop.call("leave", room=room)
    await other.until(
        "presence", room=room, where=lambda e: [u["id"] for u in e["left"]] == [sam.member], within=2 * UNIT
    )


async def test_a_redis_restart_mid_traffic_loses_nothing(
    tmp_path: Path, own_redis: RedisProcess, redis_prefix: str, postgres_url: str
) -> None:
    """Redis killed and restarted while both workers take sends: every client ends with every event, in order."""
    cluster = await start_cluster(tmp_path, 2, redis_url=own_redis.url, prefix=redis_prefix, database_url=postgres_url)
    try:
        room, (a, b, c) = await _setup(cluster, 3)
        ca, cb, cc = await cluster.client(0, a), await cluster.client(1, b), await cluster.client(0, c)
        for client in (ca, cb, cc):
            await client.call("join", room=room)
        first = await asyncio.gather(_send_many(ca, room, 50, "a1"), _send_many(cb, room, 50, "b1"))
        await own_redis.kill()
        during = await asyncio.gather(_send_many(ca, room, 50, "a2"), _send_many(cb, room, 50, "b2"))
        async with httpx.AsyncClient(base_url=cluster.workers[0].http_url) as http:
            ready = (await http.get("/readyz")).json()
        assert ready["status"] == "degraded" and ready["checks"]["broker"] == "down"
        await own_redis.start()
        after = await asyncio.gather(_send_many(ca, room, 50, "a3"), _send_many(cb, room, 50, "b3"))
        total = [s for batch in (*first, *during, *after) for s in batch]
        assert sorted(total) == list(range(1, 301))
        for client in (ca, cb, cc):
            async with asyncio.timeout(6 * TIMEOUT):
                assert [e["seq"] for e in await client.messages(room, 300)] == list(range(1, 301))
    finally:
        await _stop(cluster)


async def test_hearth_serve_workers_share_one_port_and_one_room(
    tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str, processes: list[ServerProcess]
) -> None:
    """`hearth serve --workers 2`, whose workers each listen on the port: 16 clients in one
    room, spread by the kernel over both workers, all get one message; a second server on
    the port is refused, and SIGTERM stops the parent and its workers cleanly."""
    env = {"DATABASE_URL": postgres_url, "REDIS_URL": redis_url, "HEARTH_REDIS_PREFIX": redis_prefix}
    proc = ServerProcess(tmp_path, "--workers", "2", **env)
    processes.append(proc)
    await proc.start()  # the parent prints the port before its workers listen: wait for them
    async with httpx.AsyncClient(base_url=proc.http_url) as http:

        async def listening() -> bool:
            try:
                return (await http.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(listening, within=6 * TIMEOUT, every=0.1)
    # A second server on the same port is refused, not let in to share it.
    second = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "serve", "--port", str(proc.port), "--workers", "2", env=proc.env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(second.communicate(), 6 * TIMEOUT)
    assert second.returncode == 2 and "is Hearth running there already?" in err.decode()
    staff = await process_account(proc, "facilitator")
    room = await process_room(proc, staff)
    member = await process_account(proc)
    clients = await asyncio.gather(*(open_client(proc, member) for _ in range(16)))
    try:
        await asyncio.gather(*(client.call("join", room=room) for client in clients))
        sent = await clients[0].call("send", room=room, text="to every worker", client_id="w1")
        for client in clients:
            [event] = await client.messages(room, 1)
            assert (event["seq"], event["text"]) == (sent["seq"], "to every worker")
        # Each scrape on a new connection lands on either worker: both hold some of the 16.
        held: dict[str, int] = {}
        for _ in range(50):
            async with httpx.AsyncClient(base_url=proc.http_url) as http:
                text = (await http.get("/metrics")).text
            pid = re.search(r'^hearth_worker_info\{pid="(\d+)"\}', text, re.M)
            count = re.search(r"^hearth_connections (\S+)", text, re.M)
            assert pid and count
            held[pid[1]] = int(float(count[1]))
            if len(held) == 2:
                break
        assert len(held) == 2 and sum(held.values()) == 16 and min(held.values()) >= 1, held
    finally:
        for client in clients:
            await client.close()
    assert await proc.signal(signal.SIGTERM) == 0


async def test_an_unreachable_database_gets_unavailable_never_a_false_ack_and_recovers(
    tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    """With PostgreSQL cut off, sends answer `unavailable`; once it is back, sends succeed again by themselves."""
    host_port, database = postgres_url.split("@", 1)[1].split("/", 1)
    host, port = host_port.split(":")
    proxy = await TcpProxy(host, int(port)).start()
    via_proxy = f"{postgres_url.split('@', 1)[0]}@127.0.0.1:{proxy.port}/{database}"
    cluster = await start_cluster(tmp_path, 1, redis_url=redis_url, prefix=redis_prefix, database_url=via_proxy)
    try:
        room, (a,) = await _setup(cluster, 1)
        client = await cluster.client(0, a)
        await client.call("join", room=room)
        acked = {(await client.call("send", room=room, text=f"ok {i}", client_id=f"ok{i}"))["seq"] for i in range(5)}
        await proxy.cut()
        refused = [await client.request("send", room=room, text=f"lost {i}", client_id=f"x{i}") for i in range(5)]
        assert [r["error"]["code"] for r in refused] == ["unavailable"] * 5
        async with httpx.AsyncClient(base_url=cluster.workers[0].http_url) as http:
            assert (await http.get("/readyz")).status_code == 503
            await proxy.restore()  # the worker reconnects by itself; /readyz tells when

            async def ready() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await eventually(ready, within=6 * TIMEOUT, every=0.1)
        retried = await client.call("send", room=room, text="lost 0", client_id="x0")  # the client retries
        acked.add(retried["seq"])
        history = (await client.call("history", room=room))["events"]
        assert {e["seq"] for e in history} == acked == set(range(1, 7))
        assert [e["client_id"] for e in history] == ["ok0", "ok1", "ok2", "ok3", "ok4", "x0"]
    finally:
        await _stop(cluster)
        await proxy.stop()


async def test_logout_on_one_worker_closes_the_tokens_sockets_on_the_others(cluster: Cluster) -> None:
    """A token revoked through worker 1 closes its socket on worker 2 with 4401 within a heartbeat."""
    _, (sam,) = await _setup(cluster, 1)
    elsewhere = await cluster.client(1, sam)
    async with httpx.AsyncClient(base_url=cluster.workers[0].http_url) as http:
        r = await http.post("/api/logout", headers={"Authorization": f"Bearer {sam.token}"})
        assert r.status_code == 200
    assert await elsewhere.close_code() == 4401


async def test_per_user_limits_hold_across_workers(
    tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    """Connections and sends of one user are counted together whichever worker they reach."""
    cluster = await start_cluster(tmp_path, 2, redis_url=redis_url, prefix=redis_prefix, database_url=postgres_url)
    for worker in cluster.workers:  # restart both with tight per-user limits
        await worker.stop()
        worker.env |= {"HEARTH_USER_CONNECTIONS": "2", "HEARTH_USER_RATE": "0.5", "HEARTH_USER_BURST": "3"}
        await worker.start()
    try:
        room, (sam,) = await _setup(cluster, 1)
        one, two = await cluster.client(0, sam), await cluster.client(1, sam)
        third = await open_client(cluster.workers[0])
        cluster.clients.append(third)
        assert (await third.error("auth", token=sam.token))["code"] == "rate_limited"
        assert await third.close_code() == 4429
        for client in (one, two):
            await client.call("join", room=room)
        replies = [
            await c.request("send", room=room, text="hi", client_id=f"m{i}") for i, c in enumerate([one, two] * 3)
        ]
        assert ["result" in r for r in replies].count(True) == 3
        assert {r["error"]["code"] for r in replies if "error" in r} == {"rate_limited"}
    finally:
        await _stop(cluster)


async def _group_session(cluster: Cluster, members: int, **fields: Any) -> tuple[str, Account, list[Account], str]:
    """A group room on the cluster, its facilitator and members, and a session starting in 10 minutes."""
    worker = cluster.workers[0]
    staff = await process_account(worker, "facilitator")
    room = await process_room(worker, staff, kind="group")
    people = [await process_account(worker) for _ in range(members)]
    start = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M")
    async with httpx.AsyncClient(base_url=worker.http_url, headers={"Authorization": f"Bearer {staff.token}"}) as http:
        for person in people:
            assert (await http.post(f"/api/rooms/{room}/members", json={"user": person.id})).status_code == 201
        body = {"title": "Evening circle", "start": start, "tz": "UTC", "duration_minutes": 60, **fields}
        r = await http.post(f"/api/rooms/{room}/sessions", json=body)
        assert r.status_code == 201, r.text
        session = r.json()["session"]["id"]
    return room, staff, people, session


async def test_a_reminder_fires_exactly_once_across_two_workers(cluster: Cluster, postgres_url: str) -> None:
    """Both workers' schedulers see the reminder due: each device of a registered member gets it once."""
    room, _, (sam, jo), session = await _group_session(cluster, 2, reminder_minutes=30, lobby_minutes=0)
    phone, laptop = await cluster.client(0, sam), await cluster.client(1, sam)
    other = await cluster.client(1, jo)  # a member who did not register
    async with httpx.AsyncClient(base_url=cluster.workers[1].http_url) as http:
        listed = await http.get(
            f"/api/sessions/{session}/occurrences", headers={"Authorization": f"Bearer {sam.token}"}
        )
        key = listed.json()["occurrences"][0]["key"]
        r = await http.post(
            f"/api/sessions/{session}/occurrences/{key}/registration", headers={"Authorization": f"Bearer {sam.token}"}
        )
        assert r.status_code == 201
    for device in (phone, laptop):
        reminder = await device.event("reminder")
        assert reminder["session"] == session and reminder["key"] == key and reminder["room"] == room
    # No second reminder on any device over many more scheduler ticks (every 0.3 s) on both workers.
    await asyncio.gather(*(device.no_event("reminder", within=2 * UNIT) for device in (phone, laptop, other)))
    import asyncpg

    db = await asyncpg.connect(postgres_url)
    try:
        rows = await db.fetch("SELECT user_id, kind FROM notification_outbox WHERE session_id = $1", session)
    finally:
        await db.close()
    assert [(r["user_id"], r["kind"]) for r in rows] == [(sam.id, "reminder")]


async def test_the_lobby_opens_once_and_the_floor_is_the_same_from_both_workers(cluster: Cluster) -> None:
    """The scheduler opens the lobby once; hands and the floor given on one worker are seen alike on both."""
    room, staff, (sam, jo), _ = await _group_session(cluster, 2, lobby_minutes=15, reminder_minutes=0)
    facilitator = await cluster.client(0, staff)
    session = (await facilitator.call("join", room=room))["session"]
    while session is None:  # joined before the scheduler opened the lobby: it comes live
        event = await facilitator.event("session", room=room)
        if event["action"] == "opened":
            assert event["from"]["id"] == "hearth"
            session = event
    assert session["title"] == "Evening circle"
    sam_c, jo_c = await cluster.client(1, sam), await cluster.client(0, jo)
    for client in (sam_c, jo_c):
        assert (await client.call("join", room=room))["waiting"] is True
    await facilitator.call("admit", room=room)
    await facilitator.call("session", room=room, action="start")
    await sam_c.call("hand", room=room, up=True)
    await jo_c.call("hand", room=room, up=True)
    await facilitator.call("floor", room=room, action="give", user=jo.member, seconds=60)
    views = []
    for worker in (0, 1):
        look = await cluster.client(worker, staff)
        views.append((await look.call("join", room=room))["session"])
    assert views[0]["queue"] == views[1]["queue"] == [sam.member]
    assert views[0]["floor"] == views[1]["floor"] == jo.member
    assert views[0]["floor_until"] == views[1]["floor_until"]
    history = (await facilitator.call("history", room=room, limit=100))["events"]
    assert [e["action"] for e in history if e["ev"] == "session"].count("opened") == 1


async def test_a_facilitator_made_a_member_loses_the_facilitators_view_on_every_worker_at_once(
    cluster: Cluster,
) -> None:
    """A room facilitator connected to worker 2 is made a plain member through worker 1: the
    next private lobby event (a knock) no longer reaches them, and `attendance` is refused,
    without their reconnecting."""
    lead = await process_account(cluster.workers[0], "facilitator")
    helper = await process_account(cluster.workers[0], "facilitator")
    member = await process_account(cluster.workers[0])
    room = await process_room(cluster.workers[0], lead, kind="group")
    async with httpx.AsyncClient(base_url=cluster.workers[0].http_url, timeout=TIMEOUT) as http:
        for who, role in ((helper, "facilitator"), (member, "member")):
            r = await http.post(f"/api/rooms/{room}/members", json={"user": who.id, "role": role}, headers=auth(lead))
            assert r.status_code == 201, r.text
        c_lead = await cluster.client(0, lead)
        c_helper = await cluster.client(1, helper)
        await c_lead.call("join", room=room)
        await c_lead.call("session", room=room, action="open", title="Circle")
        await c_helper.call("join", room=room)
        c_member = await cluster.client(0, member)
        assert (await c_member.call("join", room=room))["waiting"] is True
        assert (await c_helper.event("session", room=room))["action"] in ("opened", "waiting")
        await c_member.call("knock", room=room, text="Can I come in?")
        while (await c_helper.event("session", room=room))["action"] != "knock":
            pass  # a room facilitator sees the lobby
        r = await http.post(
            f"/api/rooms/{room}/members", json={"user": helper.id, "role": "member"}, headers=auth(lead)
        )
        assert r.status_code == 201, r.text

    async def refused() -> bool:
        return "error" in await c_helper.request("attendance", room=room)

    await eventually(refused, every=0.05)  # the change crosses to worker 2 (no heartbeat rechecks roles)
    await c_member.call("knock", room=room, text="Hello again")
    await c_lead.call("session", room=room, action="pin", kind="agenda", text="Welcome, everyone")
    while (event := await c_helper.event("session", room=room))["action"] != "pinned":
        assert event["action"] != "knock", "a demoted facilitator still sees the lobby's knocks"
    assert (await c_helper.error("attendance", room=room))["code"] == "forbidden"


async def test_a_token_signed_out_on_one_worker_closes_its_sockets_on_another_at_once(
    tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str
) -> None:
    """Logout through worker 1 closes the token's socket on worker 2 with 4401 within a
    second, not at the next heartbeat (6 s with the default lease)."""
    cluster = await start_cluster(
        tmp_path, 2, redis_url=redis_url, prefix=redis_prefix, database_url=postgres_url, presence_ttl=24.0
    )  # the default lease: the heartbeat that reloads revocations runs every 6 s
    try:
        account = await process_account(cluster.workers[0])
        client = await cluster.client(1, account)
        await client.call("ping")
        async with httpx.AsyncClient(base_url=cluster.workers[0].http_url, timeout=TIMEOUT) as http:
            started = asyncio.get_running_loop().time()
            assert (await http.post("/api/logout", headers=auth(account))).status_code == 200
        assert await client.closing(within=1.0 * UNIT) == (4401, "signed out")
        took = asyncio.get_running_loop().time() - started
        record_figure("logout on another worker", "socket closed after", took * 1000, "ms")
    finally:
        await _stop(cluster)
