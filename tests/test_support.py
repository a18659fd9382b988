"""The ways tests wait: each fails when what it waits for does not come, or when what must
not come does, so that a test built on them fails when the server misbehaves."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import UNIT, Api, Client, Running, eventually, open_client


async def room_of_two(server: Running, api: Api, clients: list[Client]) -> tuple[str, Client, Client]:
    """A room with a member who sends and one who watches."""
    room = await api.room(await api.staff())
    sender, watcher = await open_client(server, await api.signup()), await open_client(server, await api.signup())
    clients += [sender, watcher]
    for client in (sender, watcher):
        await client.call("join", room=room)
    await sender.until("presence", room=room)  # the watcher arrived after the sender
    return room, sender, watcher


async def test_no_event_fails_as_soon_as_one_comes(server: Running, api: Api, clients: list[Client]) -> None:
    """A message sent while `no_event("message")` waits fails it at once, not at the end of its time."""
    room, sender, watcher = await room_of_two(server, api, clients)
    waiting = asyncio.create_task(watcher.no_event("message", room=room, within=10 * UNIT))
    started = time.monotonic()
    await sender.call("send", room=room, text="hello", client_id="c1")
    with pytest.raises(AssertionError, match="'message' event in .* came within"):
        await waiting
    assert time.monotonic() - started < 5 * UNIT


async def test_no_event_fails_for_one_that_came_before_and_was_not_taken(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """An event already received and not yet taken fails `no_event`, even with no time to wait;
    once `event()` has taken it, `no_event` passes, and so it does for events of other kinds."""
    room, sender, watcher = await room_of_two(server, api, clients)
    await sender.call("send", room=room, text="hello", client_id="c1")
    await watcher.until("message", room=room)
    with pytest.raises(AssertionError):
        await watcher.no_event("message", within=0)
    await watcher.no_event("typing", room=room, within=0.1 * UNIT)
    await watcher.event("message", room=room)
    await watcher.no_event("message", room=room, within=0.1 * UNIT)
    assert [e["text"] for e in watcher.seen("message", room=room)] == ["hello"]  # seen: taken or not


async def test_until_fails_at_its_deadline_and_takes_nothing(server: Running, api: Api, clients: list[Client]) -> None:
    """`until` fails at its deadline when nothing matching came; once something has, it returns
    it, and `event()` still takes it afterwards."""
    room, sender, watcher = await room_of_two(server, api, clients)
    with pytest.raises(AssertionError, match="no 'message' event .* within"):
        await watcher.until("message", room=room, within=0.2 * UNIT)
    await sender.call("send", room=room, text="hello", client_id="c1")
    assert (await watcher.until("message", room=room, where=lambda e: e["text"] == "hello"))["seq"] == 1
    assert (await watcher.event("message", room=room))["seq"] == 1


async def test_waiting_on_a_closed_connection_fails_at_once(server: Running, clients: list[Client]) -> None:
    """Once the server has closed the connection, `event()` and `request()` fail at once: no
    frame can come any more."""
    client = await open_client(server)
    clients.append(client)
    await client.error("auth", token="not-a-token")
    assert await client.close_code() == 4401
    started = time.monotonic()
    with pytest.raises(AssertionError, match="closed \\(4401"):
        await client.event("message")
    with pytest.raises(ConnectionClosed):
        await client.request("ping")
    assert time.monotonic() - started < 5 * UNIT


async def test_eventually_returns_what_the_check_found_or_fails_at_its_deadline() -> None:
    """`eventually` returns the check's first true answer, awaited if it is a coroutine's, and
    fails at its deadline naming the check."""
    answers = iter([0, [], "found"])
    assert await eventually(lambda: next(answers)) == "found"

    async def never() -> bool:
        return False

    with pytest.raises(AssertionError, match="never"):
        await eventually(never, within=0.1 * UNIT)
