"""A client too slow to read is cut off with 4408; the room never waits for it."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import TIMEOUT, Account, Api, Client, Running, open_client, serving, test_settings


async def stalled_phone(running: Running, account: Account, room: str) -> ClientConnection:
    """A phone on a bad network: a tiny receive window, and it reads nothing after joining
    unless the test reads for it (at most 4 frames are taken off the socket meanwhile)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    sock.connect(("127.0.0.1", running.port))
    phone = await connect(running.ws_url, sock=sock, compression=None, max_queue=4, ping_interval=None)
    await phone.send(orjson.dumps({"id": 1, "op": "auth", "token": account.token}).decode())
    assert "result" in orjson.loads(await phone.recv())
    await phone.send(orjson.dumps({"id": 2, "op": "join", "room": room}).decode())
    assert "result" in orjson.loads(await phone.recv())
    return phone


async def sender_and_stalled_phone(running: Running, api: Api) -> tuple[str, Client, Account, ClientConnection]:
    """A room with a member who sends and a stalled phone (its account too) in it."""
    room = await api.room(await api.staff())
    fast, slow = await api.signup(), await api.signup()
    sender = await open_client(running, fast)
    await sender.call("join", room=room)
    return room, sender, slow, await stalled_phone(running, slow, room)


async def test_a_client_that_stops_reading_is_closed_with_4408_and_the_room_goes_on(tmp_path: Path) -> None:
    """The outbox of a stalled phone overflows: the others keep getting acks and events, it gets 4408."""
    # 16 sends in flight put 32 frames (acks and their 16 KB events) in the sender's own
    # outbox at most: about half the limit of 1 MiB.
    # A long ping interval keeps the keepalive from closing the stalled socket first.
    settings = test_settings(tmp_path, outbox_bytes=1024 * 1024, rate=5000.0, burst=5000.0, ping_interval=300.0)
    async with serving(settings) as (running, api):
        room, sender, slow, stalled = await sender_and_stalled_phone(running, api)
        await sender.event("presence", room=room)  # the stalled phone arrived

        text = "💛" * 4000  # 16 KB a frame
        sent = 0
        async with asyncio.timeout(6 * TIMEOUT):
            while True:
                await asyncio.gather(
                    *(sender.call("send", room=room, text=text, client_id=f"f{sent + i}") for i in range(16))
                )
                sent += 16
                if left := sender.seen("presence", room=room, where=lambda e: e["left"]):
                    break
        assert left[0]["left"][0]["id"] == slow.member
        # The room goes on at full speed for those who read.
        ack = await sender.call("send", room=room, text="still here", client_id="after")
        assert ack["seq"] == sent + 1
        # Once the phone reads again it finds what was queued, then the close frame 4408.
        received = 0
        try:
            async with asyncio.timeout(6 * TIMEOUT):
                async for _ in stalled:
                    received += 1
        except ConnectionClosed:
            pass
        assert stalled.close_code == 4408
        assert received < sent
        await sender.close()


async def test_a_phone_that_stops_reading_and_answering_is_let_go_and_leaves_the_room(tmp_path: Path) -> None:
    """No pong and no reading, with fewer frames held back than the 4408 limit: the keepalive
    lets it go even though its socket buffers are full, and the room sees it leave."""
    unbounded = {"outbox_bytes": 2**30, "user_outbox_bytes": 2**30}
    settings = test_settings(tmp_path, **unbounded, rate=5000.0, burst=5000.0, ping_interval=1.0)
    async with serving(settings) as (running, api):
        room, sender, slow, stalled = await sender_and_stalled_phone(running, api)
        await sender.event("presence", room=room)
        text = "💛" * 4000  # 16 KB a frame: the phone's buffers fill within a few dozen
        for i in range(4):
            await asyncio.gather(*(sender.call("send", room=room, text=text, client_id=f"f{i}.{j}") for j in range(16)))
        event = await sender.event("presence", room=room, where=lambda e: e["left"])
        assert event["left"][0]["id"] == slow.member
        stalled.transport.abort()
        await sender.close()


async def test_a_phone_that_is_behind_gets_no_typing_until_it_has_caught_up(tmp_path: Path) -> None:
    """Typing is momentary: while a phone's frames are held back, typing events are dropped
    for it rather than queued ahead of what matters. It still gets every message, in order,
    and typing again once it has read its way back."""
    unbounded = {"outbox_bytes": 2**30, "user_outbox_bytes": 2**30}
    settings = test_settings(tmp_path, **unbounded, rate=5000.0, burst=5000.0, ping_interval=300.0)
    async with serving(settings) as (running, api):
        staff = await api.staff()
        room = await api.room(staff)
        fast, slow, typist, later = [await api.signup() for _ in range(4)]
        sender, writer = await open_client(running, fast), await open_client(running, typist)
        for client in (sender, writer):
            await client.call("join", room=room)
        phone = await stalled_phone(running, slow, room)

        text = "💛" * 4000  # 16 KB a frame; 6.4 MB in all, far past what the sockets buffer
        for i in range(25):
            await asyncio.gather(*(sender.call("send", room=room, text=text, client_id=f"f{i}.{j}") for j in range(16)))
        await writer.call("typing", room=room)  # while the phone is behind
        assert (await sender.event("typing", room=room))["user"]["id"] == typist.member  # the others see it
        await sender.call("send", room=room, text="after", client_id="after")

        seen: list[dict[str, object]] = []
        async with asyncio.timeout(6 * TIMEOUT):
            while not seen or seen[-1].get("text") != "after":
                seen.append(orjson.loads(await phone.recv()))
        assert [e["seq"] for e in seen if e["ev"] == "message"] == list(range(1, 402))
        assert not [e for e in seen if e["ev"] == "typing"]

        newcomer = await open_client(running, later)
        await newcomer.call("join", room=room)
        await newcomer.call("typing", room=room)
        async with asyncio.timeout(TIMEOUT):
            while (event := orjson.loads(await phone.recv()))["ev"] != "typing":
                assert event["ev"] == "presence"
        assert event["user"]["id"] == later.member  # type: ignore[index]
        for client in (sender, writer, newcomer):
            await client.close()
        await phone.close()
