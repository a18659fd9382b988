"""Bursts on Redis: thousands of sockets closing (or arriving) at once on two workers are load,
not an outage. Presence stays right, and no worker says it lost Redis; when Redis does go,
the worker says why."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from rooms.errors import Unavailable
from server.broker import Saturated, open_broker, open_shared
from server.broker.redis import RedisBroker
from server.broker.redis_commands import BATCH, LANES, RedisCommands, command
from tests.conftest import (
    TIMEOUT,
    Account,
    Client,
    RedisProcess,
    ServerProcess,
    eventually,
    open_client,
    process_account,
    process_room,
    record_figure,
)

CLIENTS = 2000  # sockets, half on each worker
USERS = 16  # each with 125 sockets, in every room, on both workers (sign-ups are limited per address)
ROOMS = 8
# What a worker logs when shared state fails: down (`unavailable … running degraded`) or busy.
DEGRADED = re.compile(r"hearth\.hub (shared state|broker) (unavailable|busy)")


def _env(redis_url: str, redis_prefix: str, postgres_url: str) -> dict[str, str]:
    """Workers on one Redis and one PostgreSQL, with the production presence lease (24 s): a
    release that failed shows as a stale user for that long."""
    return {
        "REDIS_URL": redis_url,
        "HEARTH_REDIS_PREFIX": redis_prefix,
        "DATABASE_URL": postgres_url,
        "HEARTH_PRESENCE_TTL": "24",
        "HEARTH_USER_CONNECTIONS": str(CLIENTS // USERS),
    }


@pytest.fixture
async def workers(
    tmp_path: Path, redis_url: str, redis_prefix: str, postgres_url: str
) -> AsyncIterator[list[ServerProcess]]:
    started = [ServerProcess(tmp_path, **_env(redis_url, redis_prefix, postgres_url)) for _ in range(2)]
    await asyncio.gather(*(w.start() for w in started))
    yield started
    for worker in started:
        await worker.stop()


async def _people(workers: list[ServerProcess]) -> tuple[list[str], list[Account], list[Client]]:
    """Rooms, the crowd's accounts, and a watcher on each worker joined to every room."""
    staff = await process_account(workers[0], "facilitator")
    rooms = [await process_room(workers[0], staff) for _ in range(ROOMS)]
    accounts = list(await asyncio.gather(*(process_account(workers[i % 2]) for i in range(USERS))))
    watchers = [await open_client(w, await process_account(w)) for w in workers]
    for watcher in watchers:
        for room in rooms:
            await watcher.call("join", room=room)
    return rooms, accounts, watchers


async def _crowd(
    workers: list[ServerProcess], rooms: list[str], accounts: list[Account], *, at_once: int
) -> list[Client]:
    """CLIENTS sockets, each signed in and joined to a room; every user has sockets in every
    room on both workers. `at_once` of them connect together."""
    places: list[tuple[ServerProcess, Account, str]] = []
    for i in range(CLIENTS):
        j = i // USERS
        places.append((workers[j % 2], accounts[i % USERS], rooms[j // 2 % ROOMS]))

    async def one(worker: ServerProcess, account: Account, room: str) -> Client:
        client = await open_client(worker, account)
        await client.call("join", room=room)
        return client

    crowd: list[Client] = []
    for start in range(0, CLIENTS, at_once):
        crowd += await asyncio.gather(*(one(*place) for place in places[start : start + at_once]))
    return crowd


async def _present(client: Client, room: str) -> set[str]:
    """Who `client` sees in the room, across every worker (a join is a resume: it answers presence)."""
    return {card["id"] for card in (await client.call("join", room=room))["presence"]}


async def _seen_by_all(watchers: list[Client], rooms: list[str]) -> list[set[str]]:
    """Everyone each watcher sees, over all the rooms."""
    return [set().union(*[await _present(watcher, room) for room in rooms]) for watcher in watchers]


def _complaints(workers: list[ServerProcess]) -> list[str]:
    return [line for worker in workers for line in worker.log if DEGRADED.search(line)]


async def test_two_thousand_sockets_closing_at_once_leave_presence_at_once_without_degrading(
    workers: list[ServerProcess],
) -> None:
    """2,000 sockets of 16 users in 8 rooms, spread over two workers, all dropped at once: a
    watcher on each worker sees every one of those users gone within seconds (not after the
    24 s lease), and neither worker logs that shared state was unavailable or busy."""
    rooms, accounts, watchers = await _people(workers)
    crowd = await _crowd(workers, rooms, accounts, at_once=100)
    everyone = {a.member for a in accounts}
    assert all(everyone <= seen for seen in await _seen_by_all(watchers, rooms))

    closed_at = time.monotonic()
    for client in crowd:  # every socket at once, as when a network or a load balancer drops them
        client.ws.transport.abort()

    async def forgotten() -> bool:
        return not set().union(*await _seen_by_all(watchers, rooms)) & everyone

    await eventually(forgotten, within=3 * TIMEOUT, every=0.1)  # as a join answers it, on each worker
    settled = time.monotonic() - closed_at
    record_figure("mass close of 2,000", "presence right on both workers after", settled * 1000, "ms")
    assert settled < 5 * TIMEOUT / 10, f"presence took {settled:.1f} s to forget the closed sockets"
    assert _complaints(workers) == []
    await asyncio.gather(*(c.reader for c in crowd), return_exceptions=True)
    for watcher in watchers:
        await watcher.close()


async def test_two_thousand_sockets_arriving_at_once_are_all_present_without_degrading(
    workers: list[ServerProcess],
) -> None:
    """A reconnect storm: 2,000 sockets over two workers connect, sign in and join at the
    same moment. Each is counted and leased (a watcher on each worker sees every user), and
    neither worker logs that shared state was unavailable or busy."""
    rooms, accounts, watchers = await _people(workers)
    started = time.monotonic()
    crowd = await _crowd(workers, rooms, accounts, at_once=CLIENTS)
    record_figure("storm of 2,000", "all joined after", (time.monotonic() - started) * 1000, "ms")
    everyone = {a.member for a in accounts}
    assert all(everyone <= seen for seen in await _seen_by_all(watchers, rooms))
    assert _complaints(workers) == []
    for client in [*crowd, *watchers]:
        client.ws.transport.abort()
    await asyncio.gather(*(c.reader for c in [*crowd, *watchers]), return_exceptions=True)


async def test_a_worker_that_loses_redis_says_what_failed(
    tmp_path: Path, own_redis: RedisProcess, redis_prefix: str, postgres_url: str
) -> None:
    """With Redis killed, the worker's warning names the exception and what it means (and no
    user's data); it says degraded, not busy."""
    worker = await ServerProcess(tmp_path, **_env(own_redis.url, redis_prefix, postgres_url)).start()
    try:
        staff = await process_account(worker, "facilitator")
        room = await process_room(worker, staff)
        client = await open_client(worker, staff)
        await client.call("join", room=room)
        await own_redis.kill()
        await client.request("join", room=room)  # presence is read from Redis
        said = await eventually(lambda: _complaints([worker]), every=0.05)  # the worker's log comes through a pipe
        assert re.search(
            r"shared state unavailable \((ConnectionError|TimeoutError|OSError): "
            r"(Redis|The network)[^)]*\): running degraded",
            said[0],
        ), said
        assert all(who not in said[0] for who in (staff.username, staff.id, staff.member))
        await client.close()
    finally:
        await worker.stop()


async def test_a_burst_of_releases_shares_a_few_pipelines(redis_url: str, redis_prefix: str) -> None:
    """2,000 presence releases at once go to Redis in a few pipelines over at most `LANES`
    connections, not one connection each."""
    broker = open_broker(redis_url, prefix=redis_prefix)
    await broker.start()
    try:
        presence = open_shared(broker, presence_ttl=24).presence
        card = {"id": "m", "name": "M", "role": "patient"}
        leases = [(f"r_{i % 8}", f"m_{i % 16}", f"c{i}", card) for i in range(2000)]
        await presence.renew(leases)
        assert isinstance(broker, RedisBroker)
        before = broker.commands.pipelines
        gone = await asyncio.gather(*(presence.remove(r, u, c) for r, u, c, _ in leases))
        assert sum(gone) == 16
        assert broker.commands.pipelines - before <= 2 * 2000 // BATCH + LANES
    finally:
        await broker.aclose()


async def test_a_call_kept_waiting_behind_others_is_busy_and_a_dead_redis_is_down(redis_url: str) -> None:
    """A call that waited its whole bound while Redis answered the calls ahead is `Saturated`
    (this worker's load); a call to a Redis that refuses connections is `Unavailable` (down),
    with the Redis exception as its cause."""
    client = Redis.from_url(redis_url)
    commands = RedisCommands(client, lanes=1, batch=1, wait=0.5)
    try:
        ahead = [commands.run(command("BLPOP", "hearth-test:nothing", 0.2)) for _ in range(5)]
        results = await asyncio.gather(*ahead, commands.run(command("PING")), return_exceptions=True)
        assert results[0] is None  # BLPOP timed out in Redis: Redis answered
        assert isinstance(results[-1], Saturated), results
        assert "Redis answers" in results[-1].message
    finally:
        await commands.aclose()
        await client.aclose()
    dead = Redis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1.0)
    commands = RedisCommands(dead)
    try:
        with pytest.raises(Unavailable) as failed:
            await commands.run(command("PING"))
        assert not isinstance(failed.value, Saturated)
        assert type(failed.value.__cause__).__name__ == "ConnectionError"
        assert "Redis refused or dropped the connection" in str(failed.value)
    finally:
        await commands.aclose()
        await dead.aclose()
