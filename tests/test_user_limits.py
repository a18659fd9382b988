"""Limits per user, whatever the number of devices: the event rate and open connections."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.broker.memory import MemoryLimiter
from tests.conftest import TIMEOUT, RedisProcess, open_client, serving, test_settings


async def test_the_event_rate_is_per_user_across_devices(tmp_path: Path) -> None:
    """Two phones of one user share one bucket of sends; another user is not slowed down."""
    async with serving(test_settings(tmp_path, user_rate=1.0, user_burst=4.0)) as (running, api):
        staff = await api.staff()
        room = await api.room(staff)
        sam, jo = await api.signup(), await api.signup()
        phone = await open_client(running, sam)
        laptop = await open_client(running, sam)
        other = await open_client(running, jo)
        for client in (phone, laptop, other):
            await client.call("join", room=room)
        replies = [
            await c.request("send", room=room, text="hi", client_id=f"m{i}") for i, c in enumerate([phone, laptop] * 3)
        ]
        errors = [r["error"] for r in replies if "error" in r]
        assert len(replies) - len(errors) == 4
        assert {e["code"] for e in errors} == {"rate_limited"} and all(e["retry_after"] > 0 for e in errors)
        assert "result" in await other.request("send", room=room, text="me too", client_id="o1")
        for client in (phone, laptop, other):
            await client.close()


async def test_connections_past_the_per_user_limit_are_refused_with_4429(tmp_path: Path) -> None:
    """The third socket of a user limited to two gets rate_limited and close 4429; closing one frees a place."""
    async with serving(test_settings(tmp_path, user_connections=2)) as (running, api):
        sam = await api.signup()
        first, second = await open_client(running, sam), await open_client(running, sam)
        third = await open_client(running)
        assert (await third.error("auth", token=sam.token))["code"] == "rate_limited"
        assert await third.close_code() == 4429
        await first.close()
        # The server frees the place when it has processed the close, just after the client saw it.
        async with asyncio.timeout(TIMEOUT):
            while True:
                fourth = await open_client(running)
                if "result" in await fourth.request("auth", token=sam.token):
                    break
                await fourth.close_code()
        for client in (second, fourth):
            await client.close()


async def test_per_user_limits_hold_on_each_worker_while_redis_is_away(tmp_path: Path, own_redis: RedisProcess) -> None:
    """With Redis gone, a user's event rate and open sockets are still limited, by each worker
    on its own (they were not limited at all)."""
    settings = test_settings(tmp_path, user_rate=0.5, user_burst=3.0, user_connections=2)
    async with serving(settings.with_(broker_url=own_redis.url)) as (running, api):
        staff = await api.staff()
        room = await api.room(staff)
        sam = await api.signup()
        phone = await open_client(running, sam)
        await phone.call("join", room=room)
        await own_redis.kill()
        replies = [await phone.request("send", room=room, text="hi", client_id=f"m{i}") for i in range(8)]
        assert sum("result" in r for r in replies) <= 3 + 1  # the burst, and what the worker had taken already
        assert {r["error"]["code"] for r in replies if "error" in r} == {"rate_limited"}
        laptop = await open_client(running, sam)
        tablet = await open_client(running)
        error = await tablet.error("auth", token=sam.token)
        assert error["code"] == "rate_limited"
        assert await tablet.close_code() == 4429
        for client in (phone, laptop):
            await client.close()


async def test_a_workers_own_limiter_keeps_drained_buckets_when_full_of_others() -> None:
    """Past its size, the limiter drops buckets that refilled, then the least recently used:
    never all at once, which would hand a drained bucket its burst again."""
    limiter = MemoryLimiter(size=100)
    assert [await limiter.take("victim", 0.001, 2.0) for _ in range(3)][-1] > 0
    for i in range(300):  # someone makes up keys: every username tried at sign-in makes one
        await limiter.take(f"made-up-{i}", 0.001, 2.0)
        if i % 50 == 0:
            assert await limiter.take("victim", 0.001, 2.0) > 0  # still drained, still recent
