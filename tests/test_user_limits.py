"""Limits per user, whatever the number of devices: the event rate and open connections."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import TIMEOUT, open_client, serving, test_settings


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
