"""The contracts of presence, limits and locks, on the memory and the Redis backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from rooms.model import UserId
from server.broker import Shared, open_broker, open_shared
from tests.contract.conftest import TTL

ROOM = "r_contract"
SAM = {"id": "u_sam", "name": "Sam", "role": "patient"}
JO = {"id": "u_jo", "name": "Jo", "role": "caregiver"}

# Leases lapse only on Redis: the memory backend serves one process, whose connections cannot
# outlive it, so its leases never lapse and these tests have nothing to check there.
leases_lapse = pytest.mark.parametrize("broker", ["redis"], indirect=True)


async def test_presence_lists_each_user_once_however_many_connections(shared: Shared) -> None:
    """A user with two connections is one entry; `add` says True only for their first."""
    assert await shared.presence.add(ROOM, "u_sam", "c1", SAM) is True
    assert await shared.presence.add(ROOM, "u_sam", "c2", SAM) is False
    assert await shared.presence.add(ROOM, "u_jo", "c3", JO) is True
    assert sorted(m["id"] for m in await shared.presence.members(ROOM)) == ["u_jo", "u_sam"]
    assert await shared.presence.members("r_elsewhere") == []


async def test_presence_says_left_only_when_the_last_connection_goes(shared: Shared) -> None:
    """`remove` is True once, for the user's last connection; removing twice changes nothing."""
    await shared.presence.add(ROOM, "u_sam", "c1", SAM)
    await shared.presence.add(ROOM, "u_sam", "c2", SAM)
    assert await shared.presence.remove(ROOM, "u_sam", "c1") is False
    assert [m["id"] for m in await shared.presence.members(ROOM)] == ["u_sam"]
    assert await shared.presence.remove(ROOM, "u_sam", "c2") is True
    assert await shared.presence.remove(ROOM, "u_sam", "c2") is False
    assert await shared.presence.members(ROOM) == []


@leases_lapse
async def test_leases_lapse_without_a_heartbeat_and_a_sweep_reports_each_once(shared: Shared) -> None:
    """Without refresh a lease expires: members drop it at once, one sweep reports it (Redis)."""
    await shared.presence.add(ROOM, "u_sam", "c1", SAM)
    await shared.presence.add(ROOM, "u_jo", "c2", JO)
    for _ in range(3):
        await asyncio.sleep(TTL / 3)
        assert await shared.presence.add(ROOM, "u_jo", "c2", JO) is False  # a renewal
    assert [m["id"] for m in await shared.presence.members(ROOM)] == ["u_jo"]
    sweeps = await asyncio.gather(*(shared.presence.sweep(ROOM) for _ in range(4)))
    assert sorted(card["id"] for gone in sweeps for card in gone) == ["u_sam"]
    # Renewing a lapsed lease brings the user back and says so.
    assert await shared.presence.add(ROOM, "u_sam", "c1", SAM) is True


def leases_in_25_rooms(count: int) -> list[tuple[str, str, str, dict[str, str]]]:
    """`count` leases of as many users, spread over 25 rooms: (room, user, connection, card)."""
    cards = [{"id": f"u_{i}", "name": f"User {i}", "role": "patient"} for i in range(count)]
    return [(f"{ROOM}{i % 25}", card["id"], f"c{i}", card) for i, card in enumerate(cards)]


async def test_a_heartbeat_renews_thousands_of_leases_at_once_and_names_the_arrivals(shared: Shared) -> None:
    """One `renew` keeps 2,500 leases in 25 rooms alive and says, lease by lease, whose user
    had not been present."""
    leases = leases_in_25_rooms(2500)
    assert await shared.presence.renew(leases) == [True] * 2500  # every user arrives
    assert await shared.presence.renew(leases + leases[:1]) == [False] * 2501  # renewals only
    assert len(await shared.presence.members(f"{ROOM}7")) == 100
    assert await shared.presence.renew([]) == []


@leases_lapse
async def test_a_heartbeat_that_renews_lapsed_leases_brings_their_users_back(shared: Shared) -> None:
    """Once 2,500 leases have lapsed, one `renew` of a room's leases brings its 100 users back
    and names each of them, once, as arriving (Redis)."""
    leases = leases_in_25_rooms(2500)
    await shared.presence.renew(leases)
    await asyncio.sleep(TTL * 1.2)  # no heartbeat for longer than a lease lives: every lease lapses
    assert await shared.presence.members(f"{ROOM}7") == []
    back = leases[7::25]  # the users of room 7
    room, user, _, card = back[0]
    second = (room, user, "c-second", card)  # their other connection: they are back already
    assert await shared.presence.renew([*back, second]) == [True] * 100 + [False]
    assert sorted(m["id"] for m in await shared.presence.members(f"{ROOM}7")) == sorted(u for _, u, _, _ in back)


async def test_a_room_with_thousands_present_lists_every_one(shared: Shared) -> None:
    """A whole community in one room: members() names each of 9,500 present users once."""
    cards = [{"id": f"u_{i}", "name": f"User {i}", "role": "patient"} for i in range(9500)]
    await shared.presence.renew([(ROOM, card["id"], f"c{i}", card) for i, card in enumerate(cards)])
    listed = await shared.presence.members(ROOM)
    assert sorted(m["id"] for m in listed) == sorted(card["id"] for card in cards)
    assert {m["name"] for m in listed} == {card["name"] for card in cards}


async def test_a_shared_token_bucket_refuses_past_the_burst_then_refills(shared: Shared) -> None:
    """burst takes pass, the next is refused with a wait; after the wait one passes again."""
    results = [await shared.limiter.take("u_sam:send", 20.0, 5.0) for _ in range(6)]
    assert results[:5] == [0, 0, 0, 0, 0] and 0 < results[5] <= 0.06
    await asyncio.sleep(results[5] + 0.01)
    assert await shared.limiter.take("u_sam:send", 20.0, 5.0) == 0
    assert await shared.limiter.take("u_jo:send", 20.0, 5.0) == 0  # buckets are per key


async def test_takes_at_the_same_moment_get_the_whole_burst_between_them(shared: Shared) -> None:
    """Sixteen takes of one bucket at once, with a burst of 16 and 8 a second of refill: every
    one passes, and the 17th is refused (a worker fetching tokens for each take at once
    would have drained the bucket at the fifth)."""
    results = await asyncio.gather(*(shared.limiter.take("u_kim:signin", 8.0, 16.0) for _ in range(16)))
    assert results == [0.0] * 16
    assert await shared.limiter.take("u_kim:signin", 8.0, 16.0) > 0


async def test_workers_sharing_a_bucket_stay_within_its_burst_together(redis_url: str, redis_prefix: str) -> None:
    """Two workers on one Redis, each taking tokens a few at a time: together they let at
    most the burst through (plus what refills meanwhile), and lose at most a few tokens."""
    brokers = [open_broker(redis_url, prefix=redis_prefix) for _ in range(2)]
    for broker in brokers:
        await broker.start()
    try:
        limiters = [open_shared(broker, presence_ttl=TTL).limiter for broker in brokers]
        started = time.monotonic()
        passed = [await limiters[i % 2].take("u_sam:events", 10.0, 30.0) == 0 for i in range(60)]
        refilled = (time.monotonic() - started) * 10.0
        # Each worker may be left holding one token it took (2 at a time) but did not spend.
        assert 30 - 2 <= sum(passed) <= 30 + refilled
    finally:
        for broker in brokers:
            await broker.aclose()


async def test_connection_counts_are_capped_per_user(shared: Shared) -> None:
    """The limit-th connection is refused until one closes; a repeat of a counted one is fine."""
    sam = UserId("u_sam")
    assert [await shared.limiter.open_conn(sam, f"c{i}", 3) for i in range(4)] == [True, True, True, False]
    assert await shared.limiter.open_conn(sam, "c1", 3) is True
    await shared.limiter.close_conn(sam, "c2")
    assert await shared.limiter.open_conn(sam, "c4", 3) is True
    await shared.limiter.refresh_conns([(sam, "c1")])


async def test_a_lock_has_one_holder_and_a_growing_fencing_token(shared: Shared) -> None:
    """Of many concurrent takers one wins; after release or expiry the next gets a larger token."""
    leases = await asyncio.gather(*(shared.locks.acquire("reminder:42", TTL) for _ in range(10)))
    held = [lease for lease in leases if lease is not None]
    assert len(held) == 1
    first = held[0]
    assert await shared.locks.renew(first, TTL) is True
    await shared.locks.release(first)
    second = await shared.locks.acquire("reminder:42", TTL)
    assert second is not None and second.token > first.token
    await asyncio.sleep(TTL + 0.1)  # the holder stalls past its expiry
    assert await shared.locks.renew(second, TTL) is False
    third = await shared.locks.acquire("reminder:42", TTL)
    assert third is not None and third.token > second.token
    await shared.locks.release(second)  # a stale holder cannot release the new holder's lock
    assert await shared.locks.acquire("reminder:42", TTL) is None


async def test_thousands_of_connections_arriving_and_leaving_at_once_all_get_through(shared: Shared) -> None:
    """2,000 connections counted, leased, then released and uncounted all at the same moment
    (a reconnect storm, then a mass disconnect): every call succeeds, and presence ends empty."""
    conns = [(f"{ROOM}{i // 16 % 8}", f"u_{i % 16}", f"c{i}") for i in range(2000)]  # 16 users in 8 rooms

    async def arrive(room: str, user: str, conn: str) -> bool:
        assert await shared.limiter.open_conn(UserId(user), conn, 200) is True
        return await shared.presence.add(room, user, conn, {"id": user, "name": user, "role": "patient"})

    async def leave(room: str, user: str, conn: str) -> bool:
        gone = await shared.presence.remove(room, user, conn)
        await shared.limiter.close_conn(UserId(user), conn)
        return gone

    assert sum(await asyncio.gather(*(arrive(*c) for c in conns))) == 16 * 8  # each user arrives once per room
    assert sum(await asyncio.gather(*(leave(*c) for c in conns))) == 16 * 8  # and leaves once
    for i in range(8):
        assert await shared.presence.members(f"{ROOM}{i}") == []
