"""The transport around the protocol: pings, compression, gap filling, and what reaches the logs."""

from __future__ import annotations

import asyncio
import base64
import gc
import logging
import os
import weakref
from pathlib import Path

import pytest

from rooms.model import EventKind, NewEvent, Role, RoomId, User, UserId
from server.transport import Socket
from tests.conftest import TIMEOUT, Api, Client, Running, open_client, serving, start_server, test_settings


async def test_the_server_pings_idle_connections(tmp_path: Path) -> None:
    """An idle socket gets websocket pings at the heartbeat interval (read off the raw TCP stream)."""
    running = await start_server(test_settings(tmp_path, ping_interval=0.3))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert head.startswith(b"HTTP/1.1 101")
        first = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
        assert first[0] & 0x0F == 0x9  # opcode 9: ping, unprompted
        writer.close()
    finally:
        await running.stop()


async def test_permessage_deflate_is_never_negotiated(server: Running, api: Api, clients: list[Client]) -> None:
    """A client offering compression gets a connection without it (compression bombs, CPU)."""
    client = await open_client(server, await api.signup(), compression="deflate")
    clients.append(client)
    assert client.ws.protocol.extensions == []
    assert (await client.call("ping"))["ts"]


@pytest.mark.parametrize("count", [1, 10])
async def test_frames_of_every_length_encoding_reach_a_strict_client_whole(
    server: Running, api: Api, clients: list[Client], encoding: str, count: int
) -> None:
    """The server frames events itself. A history of `count` texts of 8,000 bytes is a reply
    with a 16-bit (8 KB) or a 64-bit (80 KB) payload length (RFC 6455 §5.2; acks have 7-bit
    ones), and the websockets library's client reads it whole, in both encodings."""
    staff = await api.staff()
    room = await api.room(staff)
    client = await open_client(server, await api.signup(), encoding)
    clients.append(client)
    await client.call("join", room=room)
    texts = [f"{i}" + "é" * 3999 for i in range(count)]  # 8,000 bytes of UTF-8 each
    for i, text in enumerate(texts):
        await client.call("send", room=room, text=text, client_id=f"t{i}")
    history = await client.call("history", room=room, limit=count)
    assert [e["text"] for e in history["events"]] == texts


async def test_a_lost_publish_is_filled_from_the_store_in_order(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """Events committed without reaching the broker are delivered from the store, in seq order."""
    staff = await api.staff()
    room = await api.room(staff)
    account = await api.signup()
    client = await open_client(server, account)
    clients.append(client)
    await client.call("join", room=room)
    sender = User(UserId(account.id), account.username, account.name, Role.PATIENT)
    # Committed straight to the store: as if the broker had dropped these publishes.
    lost = await server.hub.store.append(
        [NewEvent(RoomId(room), EventKind.MESSAGE, sender, {"text": f"lost {i}"}, f"lost-{i}") for i in range(3)]
    )
    assert [e.seq for e in lost] == [1, 2, 3]  # type: ignore[union-attr]
    sent = await client.call("send", room=room, text="after the loss", client_id="after")
    events = await client.messages(room, 4)
    assert [(e["seq"], e["text"]) for e in events] == [
        (1, "lost 0"),
        (2, "lost 1"),
        (3, "lost 2"),
        (4, "after the loss"),
    ]
    assert sent["seq"] == 4


async def test_no_message_text_or_token_reaches_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the server's loggers (SQL included) at DEBUG, sends, errors and bad tokens log no text or token."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # SQLAlchemy keeps itself at WARNING otherwise
    async with serving(test_settings(tmp_path)) as (running, api):  # its engines see the DEBUG level
        staff = await api.staff()
        room = await api.room(staff)
        account = await api.signup()
        client = await open_client(running, account)
        await client.call("join", room=room)
        secret = "my diagnosis is private-7d1f"
        sent = await client.call("send", room=room, text=secret, client_id="s")
        await client.call("edit", room=room, target=sent["seq"], text=secret + " edited")
        await client.error("send", room=room, text=secret + "\x00", client_id="bad")
        await client.error("send", room=room, text=secret * 200, client_id="big")
        await client.close()
        intruder = await open_client(running)
        await intruder.error("auth", token=account.token + "tampered")
        await intruder.close_code()
        await api.http.post("/api/login", json={"username": account.username, "password": "wrong password here"})
    server_side = ("hearth", "uvicorn", "starlette", "sqlalchemy", "aiosqlite", "alembic", "asyncio")
    records = [r for r in caplog.records if r.name.startswith(server_side)]
    names = {r.name for r in records}
    assert "hearth.ws" in names and any(n.startswith("sqlalchemy.engine") for n in names), names  # SQL too
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in records)
    for secret_thing in (secret, "private-7d1f", account.token, account.token.split(".")[1], "wrong password here"):
        assert secret_thing not in logged


async def test_an_event_whose_publish_was_lost_arrives_even_in_a_quiet_room(tmp_path: Path) -> None:
    """With no later event to reveal the gap, the heartbeat's check of the store delivers it."""
    async with serving(test_settings(tmp_path).with_(presence_ttl=1.0)) as (running, api):  # a check every 0.25 s
        staff = await api.staff()
        room = await api.room(staff)
        account = await api.signup()
        client = await open_client(running, account)
        await client.call("join", room=room)
        sender = User(UserId(account.id), account.username, account.name, Role.PATIENT)
        [lost] = await running.hub.store.append([NewEvent(RoomId(room), EventKind.MESSAGE, sender, {"text": "x"}, "x")])
        assert [e["seq"] for e in await client.messages(room, 1)] == [lost.seq]  # type: ignore[union-attr]
        await client.close()


async def test_metrics_count_what_happened_in_prometheus_text(tmp_path: Path) -> None:
    """/metrics reports connections, commits, fan-out, commit batches, close codes and
    garbage collector pauses of this worker."""
    async with serving(test_settings(tmp_path)) as (running, api):
        staff = await api.staff()
        room = await api.room(staff)
        a, b = await open_client(running, await api.signup()), await open_client(running, await api.signup())
        for c in (a, b):
            await c.call("join", room=room)
        for i in range(3):
            await a.call("send", room=room, text="hi", client_id=f"m{i}")
        await b.messages(room, 3)
        await a.error("send", room=room, text="", client_id="empty")
        text = (await api.http.get("/metrics")).text
        samples = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert samples["hearth_connections"] == 2 and samples["hearth_rooms_active"] == 1
        assert samples["hearth_events_committed_total"] == 3
        assert samples["hearth_frames_out_total"] >= 6  # three events to two members
        assert samples["hearth_commit_batch_size_count"] >= 1 and samples["hearth_fanout_latency_seconds_count"] == 3
        assert samples['hearth_command_errors_total{code="bad_request"}'] == 1
        assert samples['hearth_commands_total{op="send"}'] == 4
        assert samples['hearth_gc_pause_seconds_count{generation="0"}'] >= 1  # the worker allocated since it started
        await b.close()
        await a.close()


async def test_a_closed_connection_is_freed_at_once_without_the_cycle_collector(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """A socket that closes, with a close handshake or by a dropped TCP connection, leaves
    nothing in reference cycles: its protocol, parser and buffers are freed as soon as it is
    gone. What is left in cycles waits for a full collection, which stops the worker for as
    long as it takes to scan every connection it holds."""
    room = await api.room(await api.staff())

    def ours() -> set[Socket]:
        return {c.wire for c in server.hub.clients.registry.all() if isinstance(c.wire, Socket)}

    before = ours()
    opened = [await open_client(server, await api.signup()) for _ in range(3)]
    clients.extend(opened)
    for client in opened:
        await client.call("join", room=room)
        await client.call("send", room=room, text="hello", client_id="c1")
    freed = asyncio.Event()
    left = 3

    def one_freed() -> None:
        nonlocal left
        left -= 1
        if not left:
            freed.set()

    watched = [weakref.finalize(protocol, one_freed) for protocol in ours() - before]
    assert len(watched) == 3
    gc.disable()
    try:
        await opened[0].close()
        await opened[1].close()
        opened[2].ws.transport.abort()  # no close frame: the connection is simply lost
        await asyncio.wait_for(freed.wait(), TIMEOUT)
    finally:
        gc.enable()
