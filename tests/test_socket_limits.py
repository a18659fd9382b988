"""What one socket, signed in or not, can make a worker do: frames are refused by their size
before they are decoded, what a worker holds for a client is bounded in bytes, a connection
that will not finish its request is let go, and a phone that stops reading is let go too.
Each attack runs against `hearth serve` in its own process while a probe checks that
everyone else is still served."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import (
    JSON,
    MSGPACK,
    TIMEOUT,
    UNIT,
    HealthProbe,
    ServerProcess,
    eventually,
    open_client,
    process_account,
    process_room,
    record_figure,
    serving,
    start_server,
    test_settings,
)

KIB, MIB = 1024, 1024 * 1024
HEART_TEXT = "💛" * 4000  # 16,000 bytes of UTF-8: the longest message there is, near enough


def million_arrays(encoding: str) -> bytes:
    """A frame just under 1 MiB that takes long to decode: a million empty arrays."""
    if encoding == MSGPACK:
        return b"\xdd" + (1_000_000).to_bytes(4, "big") + b"\x90" * 1_000_000
    return b"[" + b"[]," * 349_000 + b"[]]"


def reset_peak(pid: int) -> None:
    """Start VmHWM (the peak of resident memory) again from the current size (Linux 4.0+)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


async def raw_socket(proc: ServerProcess, encoding: str, **options: Any) -> ClientConnection:
    return await connect(proc.ws_url, subprotocols=[encoding], compression=None, open_timeout=TIMEOUT, **options)  # type: ignore[list-item]


def frame_of(encoding: str, message: dict[str, Any]) -> str | bytes:
    if encoding == MSGPACK:
        data: bytes = msgpack.packb(message, use_bin_type=True)
        return data
    return orjson.dumps(message).decode()


def read(encoding: str, raw: str | bytes) -> Any:
    return msgpack.unpackb(raw) if encoding == MSGPACK else orjson.loads(raw)


@pytest.fixture
async def proc(tmp_path: Path) -> Any:
    server = await ServerProcess(tmp_path).start()
    yield server
    await server.stop()


# Frames are refused by size before they are decoded


@pytest.mark.parametrize("encoding", [JSON, MSGPACK])
async def test_a_huge_first_frame_is_refused_unread_while_others_are_served(proc: ServerProcess, encoding: str) -> None:
    """A first frame of a million empty arrays, with no sign-in, on four sockets at once:
    each is refused with 1009 as its header arrives (before `auth` a message is 4 KiB at
    most), never decoded, and /healthz answers all the while."""
    frame = million_arrays(encoding)
    sockets = [await raw_socket(proc, encoding) for _ in range(4)]
    async with HealthProbe(proc.http_url) as probe:
        # (a send may end in ConnectionClosed: the server refuses the frame by its header, while
        # the client is still writing the rest)
        sends = (ws.send(frame if encoding == MSGPACK else frame.decode()) for ws in sockets)
        await asyncio.gather(*sends, return_exceptions=True)
        for ws in sockets:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert ws.close_code == 1009
    record_figure("huge first frame", "slowest /healthz", probe.worst * 1000, "ms")
    assert probe.worst < 0.25, f"/healthz waited {probe.worst:.3f} s"  # decoding one took 0.36-0.6 s


async def test_sockets_not_signed_in_cannot_make_the_worker_hold_big_frames(proc: ServerProcess) -> None:
    """100 sockets without `auth`, each sending a first frame just under 1 MiB: each is
    refused by its header (1009), and the worker does not buffer them (it grew by 108 MB
    when it took up to 1 MiB before sign-in)."""
    assert proc.proc is not None
    reset_peak(proc.proc.pid)
    before = vm_kb(proc.proc.pid, "VmRSS")
    sockets = [await raw_socket(proc, MSGPACK) for _ in range(100)]
    await asyncio.gather(*(ws.send(b"\x00" * (MIB - 1)) for ws in sockets), return_exceptions=True)
    for ws in sockets:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1009
    grown = (vm_kb(proc.proc.pid, "VmHWM") - before) / 1024
    record_figure("100 big first frames", "worker memory grown", grown, "MB")
    assert grown < 30, f"the worker grew by {grown:.0f} MB"


async def test_a_socket_that_pings_without_reading_cannot_grow_the_worker(proc: ServerProcess) -> None:
    """A socket, not signed in, that sends pings for 4 s and reads none of the pongs: the
    worker stops reading from it once its answers back up, and grows by a few megabytes at
    most (its buffer for the pongs reached 183 MB in 8 s when it read on)."""
    assert proc.proc is not None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", proc.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    ping = bytes([0x89, 0x80 | 125]) + b"\x00\x00\x00\x00" + b"p" * 125  # masked with zeros
    reset_peak(proc.proc.pid)
    before = vm_kb(proc.proc.pid, "VmRSS")
    deadline = time.monotonic() + 4
    sent = 0
    with contextlib.suppress(TimeoutError, ConnectionError):
        while time.monotonic() < deadline:
            writer.write(ping * 64)
            async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                await writer.drain()  # blocks once the worker stops reading
            sent += 64 * len(ping)
    grown = (vm_kb(proc.proc.pid, "VmHWM") - before) / 1024
    record_figure("pings never read", "worker memory grown", grown, "MB")
    record_figure("pings never read", "pings taken", sent / MIB, "MB")
    writer.transport.abort()
    assert grown < 20, f"the worker grew by {grown:.0f} MB"


@pytest.mark.parametrize("encoding", [JSON, MSGPACK])
async def test_oversized_frames_after_sign_in_are_refused_unread_and_the_socket_stays_usable(
    proc: ServerProcess, encoding: str
) -> None:
    """Signed in, ten frames of a million empty arrays each get `too_large` (id null: it is
    not the first key) without being decoded; a ping afterwards is answered."""
    account = await process_account(proc)
    client = await open_client(proc, account, encoding)
    frame = million_arrays(encoding)
    async with HealthProbe(proc.http_url) as probe:
        for _ in range(10):
            await client.raw(frame if encoding == MSGPACK else frame.decode())
        for _ in range(10):
            reply = await client.event()
            assert reply["id"] is None and reply["error"]["code"] == "too_large", reply
    assert "ts" in await client.call("ping")
    await client.close()
    record_figure("oversized frames after sign-in", "slowest /healthz", probe.worst * 1000, "ms")
    assert probe.worst < 0.25, f"/healthz waited {probe.worst:.3f} s"  # decoding one took 0.36-0.6 s


async def test_a_frame_over_the_rate_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    """Past the connection's rate, a frame is answered `rate_limited` with the id it starts
    with, read off its first bytes: nothing of it is decoded or run."""
    async with serving(test_settings(tmp_path, rate=1.0, burst=2.0)) as (running, api):
        client = await open_client(running, await api.signup(), MSGPACK)
        await client.call("ping")
        await client.call("ping")
        error = await client.error("ping")
        assert error["code"] == "rate_limited" and error["retry_after"] > 0
        await client.close()


# What a worker holds for a client is bounded in bytes


async def stalled(proc: ServerProcess, token: str) -> ClientConnection:
    """A socket that reads almost nothing: a tiny receive window, and a client that stops
    taking frames off it after four."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", proc.port))
    ws = await connect(proc.ws_url, sock=sock, compression=None, max_queue=4, ping_interval=None, max_size=None)
    await ws.send(orjson.dumps({"id": 1, "op": "auth", "token": token}).decode())
    assert "result" in orjson.loads(await ws.recv())
    return ws


async def test_sockets_that_never_read_cannot_grow_the_worker(proc: ServerProcess) -> None:
    """Five sockets of one user that never read ask again and again (every 45 ms, for 3 s) to
    resume a room of 100 messages of 16 KB from the start: the worker's memory grows by a few
    megabytes at most (it grew by 100 MB per socket when replies were whole and held by the
    frame), the sockets are closed, and everyone else is served."""
    staff = await process_account(proc, "facilitator")
    room = await process_room(proc, staff)
    writer = await open_client(proc, staff)
    await writer.call("join", room=room)
    await asyncio.gather(*(writer.call("send", room=room, text=HEART_TEXT, client_id=f"h{i}") for i in range(100)))
    attacker = await process_account(proc)
    assert proc.proc is not None
    pid = proc.proc.pid
    reset_peak(pid)
    rss_before = vm_kb(pid, "VmRSS")
    sockets = [await stalled(proc, attacker.token) for _ in range(5)]
    async with HealthProbe(proc.http_url) as probe:
        deadline = time.monotonic() + 3.0
        cid = 10
        while time.monotonic() < deadline:
            for ws in sockets:
                cid += 1
                try:
                    await ws.send(orjson.dumps({"id": cid, "op": "join", "room": room, "since": 0}).decode())
                except ConnectionClosed:
                    pass
            await asyncio.sleep(0.045)
        peak = vm_kb(pid, "VmHWM")
        rss_after = vm_kb(pid, "VmRSS")
        assert "seq" in await writer.call("send", room=room, text="still here", client_id="after")
    for ws in sockets:
        ws.transport.abort()
    grown = (max(peak, rss_after) - rss_before) / 1024
    record_figure("sockets that never read", "worker memory grown", grown, "MB")
    record_figure("sockets that never read", "slowest /healthz", probe.worst * 1000, "ms")
    assert grown < 40, f"the worker grew by {grown:.0f} MB"
    assert probe.worst < 0.5, f"/healthz waited {probe.worst:.3f} s"
    await writer.close()


async def test_a_resume_bigger_than_one_reply_returns_the_newest_events_and_the_rest_pages_back(
    tmp_path: Path,
) -> None:
    """A join from `since: 0` into 40 messages of 16 KB (640 KB) gets the newest that fit in
    256 KiB and `recovered: false`; `history` pages of 100 are cut the same way; paging back
    from the first event returned reaches the start with no gap."""
    async with serving(test_settings(tmp_path, rate=1000.0, burst=1000.0)) as (running, api):
        staff = await api.staff()
        room = await api.room(staff)
        writer = await open_client(running, staff)
        await writer.call("join", room=room)
        for i in range(40):
            await writer.call("send", room=room, text=HEART_TEXT, client_id=f"h{i}")
        reader = await open_client(running, await api.signup())
        joined = await reader.call("join", room=room, since=0)
        events = joined["events"]
        assert joined["recovered"] is False and joined["seq"] == 40
        assert events[-1]["seq"] == 40 and 1 < len(events) < 40
        assert sum(len(orjson.dumps(e)) for e in events) <= 256 * KIB
        assert [e["seq"] for e in events] == list(range(events[0]["seq"], 41))
        seen = {e["seq"] for e in events}
        before = events[0]["seq"]
        while True:
            page = (await reader.call("history", room=room, before=before, limit=100))["events"]
            if not page:
                break
            assert sum(len(orjson.dumps(e)) for e in page) <= 256 * KIB
            assert [e["seq"] for e in page] == list(range(page[0]["seq"], before))
            seen |= {e["seq"] for e in page}
            before = page[0]["seq"]
        assert seen == set(range(1, 41))
        await reader.close()
        await writer.close()


# Connections that will not finish their request


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), TIMEOUT)


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    ],
    ids=["nothing", "half-a-header", "half-an-upgrade"],
)
async def test_a_connection_that_does_not_finish_its_request_is_answered_408_and_closed(
    tmp_path: Path, sent: bytes
) -> None:
    """Nothing, half a header or half a websocket upgrade: after `request_timeout` (1 s here)
    the connection gets 408 and is closed, and the worker served others meanwhile."""
    async with serving(test_settings(tmp_path, request_timeout=1.0)) as (running, api):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(sent)
        started = time.monotonic()
        async with HealthProbe(running.http_url):
            answer = await read_all(reader)
        waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert 0.8 <= waited < 5, waited
        writer.close()


async def test_a_slow_request_on_a_kept_alive_connection_is_closed(tmp_path: Path) -> None:
    """After a first request is answered, a second one that stops halfway is closed too."""
    async with serving(test_settings(tmp_path, request_timeout=1.0)) as (running, api):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 1")
        answer = await read_all(reader)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1, answer
        writer.close()


async def open_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
    return writers


async def get_status(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    answer = await read_all(reader)
    writer.close()
    return answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("limit", ["connections", "connections_per_address"])
async def test_connections_past_the_cap_are_answered_503_at_once(tmp_path: Path, limit: str) -> None:
    """With room for 6 connections (in all, or from one address), four idle sockets and two
    websockets fill it; the next connection gets 503 at once. Once a websocket closes, a
    connection is let in again: a websocket's place is given back when it is lost."""
    async with serving(test_settings(tmp_path, **{limit: 6, "request_timeout": 30.0})) as (running, api):
        account = await api.signup()
        await api.http.aclose()  # its kept-alive connection would take a place
        await eventually(lambda: running.app.state.gate.count == 0)  # the server's count: no event tells it
        idle = await open_idle(running.port, 4)
        sockets = [await open_client(running, account) for _ in range(2)]
        assert await get_status(running.port) == b"HTTP/1.1 503 Service Unavailable"
        await sockets[0].close()

        async def let_in() -> bool:
            status = await get_status(running.port)
            assert status in (b"HTTP/1.1 200 OK", b"HTTP/1.1 503 Service Unavailable"), status
            return status == b"HTTP/1.1 200 OK"

        await eventually(let_in, every=0.05)  # the place comes back once the server has seen the close
        for writer in idle:
            writer.close()
        await sockets[1].close()


# A phone that stops reading


def server_side_open(server_port: int, client_port: int) -> bool:
    """Whether the server still holds its end of the TCP connection from `client_port`."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote = line.split()[1:3]
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                return True
    return False


def joined(user_id: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a presence event says that `user_id` arrived."""
    return lambda event: user_id in {card["id"] for card in event["joined"]}


async def test_a_phone_that_stops_reading_gets_a_close_it_can_act_on_or_is_let_go(proc: ServerProcess) -> None:
    """Under `hearth serve`, with its real keepalive, two phones stop reading while a room
    floods past their outboxes (4408). One reads again 12 s later: it gets messages in order
    with no gap, then a close it can act on (4408, or 1006 for a reset), within seconds. The
    other never reads again: the worker lets its socket go within the close timeout."""
    staff = await process_account(proc, "facilitator")
    room = await process_room(proc, staff)
    sender = await open_client(proc, staff)
    await sender.call("join", room=room)
    accounts = [await process_account(proc) for _ in range(2)]
    phones = [await stalled(proc, account.token) for account in accounts]
    for phone in phones:
        await phone.send(orjson.dumps({"id": 2, "op": "join", "room": room}).decode())
    for account in accounts:  # joined: their replies wait in their sockets, unread, and the room sees them arrive
        await sender.until("presence", room=room, where=joined(account.member))

    def gone_from_the_room() -> set[str]:
        return {card["id"] for event in sender.seen("presence", room=room) for card in event["left"]}

    sent = 0
    async with asyncio.timeout(6 * TIMEOUT):
        while len(gone_from_the_room()) < 2:
            await asyncio.gather(
                *(sender.call("send", room=room, text=HEART_TEXT, client_id=f"f{sent + i}") for i in range(16))
            )
            sent += 16
    overflowed = time.monotonic()
    returning, gone = phones
    gone_port = gone.transport.get_extra_info("sockname")[1]
    # The one that never comes back: the worker lets its socket go within 12 s.
    await eventually(lambda: not server_side_open(proc.port, gone_port), within=12 * UNIT, every=0.25)
    # The one that comes back reads again 12 s after the flood (time away is the point here).
    await asyncio.sleep(overflowed + 12 - time.monotonic())
    seqs: list[int] = []
    started = time.monotonic()
    try:
        async with asyncio.timeout(TIMEOUT):
            async for raw in returning:
                event = orjson.loads(raw)
                if event.get("ev") == "message":
                    seqs.append(event["seq"])
    except ConnectionClosed:
        pass
    took = time.monotonic() - started
    record_figure("phone back after 12 s", "time to its close", took * 1000, "ms")
    assert returning.close_code in (4408, 1006), returning.close_code
    assert seqs == list(range(1, len(seqs) + 1)), "messages out of order or with a gap"
    assert time.monotonic() - overflowed < 12 + TIMEOUT
    gone.transport.abort()
    await sender.close()


async def test_a_request_head_past_64_kib_is_answered_431_and_closed(tmp_path: Path) -> None:
    """Headers sent without end (uvicorn keeps every one it is given) are cut at 64 KiB."""
    async with serving(test_settings(tmp_path)) as (running, api):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for i in range(2000):  # 2,000 headers of 100 bytes: 200 KB
                writer.write(b"X-Filler-%04d: " % i + b"a" * 84 + b"\r\n")
                await writer.drain()
        except ConnectionError:
            pass  # closed while we were still sending: what it was meant to do
        try:
            answer = await read_all(reader)
        except ConnectionResetError:
            answer = b"reset"  # the 431 was lost to the reset of a socket closed with data unread
        assert answer.startswith(b"HTTP/1.1 431 ") or answer == b"reset", answer[:100]
        assert (await api.http.get("/healthz")).status_code == 200
        writer.close()


async def test_a_request_head_split_over_reads_is_cut_at_64_kib_all_the_same(tmp_path: Path) -> None:
    """120 KiB of headers in two reads of 60 KiB: refused like one read of them."""
    async with serving(test_settings(tmp_path)) as (running, api):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        lines = b"".join(b"X-Filler-%04d: " % i + b"a" * 84 + b"\r\n" for i in range(1200))
        answer = b""
        try:
            for part in (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + lines[:60_000], lines[60_000:] + b"\r\n"):
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.1)
            answer = await read_all(reader)
        except ConnectionError:
            answer = b"reset"
        assert answer.startswith(b"HTTP/1.1 431 ") or answer == b"reset", answer[:100]
        writer.close()


async def test_a_response_not_read_does_not_hold_the_connection(tmp_path: Path) -> None:
    """Five clients that each ask for the page 200 times over and read none of it: each is
    let go `request_timeout` (2 s here) after its answers back up, not held for ever."""
    async with serving(test_settings(tmp_path, request_timeout=2.0)) as (running, api):
        await api.http.aclose()
        gate, loop = running.app.state.gate, asyncio.get_running_loop()
        sockets = []
        for _ in range(5):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", running.port))
            await loop.sock_sendall(sock, b"GET /app.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 200)
            sockets.append(sock)
        started = time.monotonic()
        await eventually(lambda: gate.count == 0, within=4 * TIMEOUT, every=0.05)  # no event tells it
        record_figure("responses never read", "connections let go after", (time.monotonic() - started) * 1000, "ms")
        for sock in sockets:
            sock.close()


async def test_an_early_answer_is_not_followed_by_a_408(tmp_path: Path) -> None:
    """A request whose body never comes, answered without reading it: one answer, then the
    connection is closed at the deadline, with no 408 written after the 200."""
    async with serving(test_settings(tmp_path, request_timeout=1.0)) as (running, api):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n")
        try:
            answer = await read_all(reader)
        except ConnectionResetError:
            answer = b""
        assert answer.count(b"HTTP/1.1 ") <= 1 and b" 408 " not in answer, answer
        writer.close()


async def test_a_handshake_with_two_origins_is_refused_with_400(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two Origin headers (or two Host headers): 400, and nothing fails on the way."""
    async with serving(test_settings(tmp_path)) as (running, api):
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\nOrigin: http://evil.example\r\n"
            f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        answer = await read_all(reader)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
        writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_sockets_not_signed_in_are_closed_with_1012_when_the_worker_stops(tmp_path: Path) -> None:
    """A socket that has not sent `auth` when the worker stops is told to reconnect (1012)."""
    running = await start_server(test_settings(tmp_path))
    client = await open_client(running)
    await running.stop()
    assert await client.close_code() == 1012
