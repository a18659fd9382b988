"""What Hearth relies on in uvicorn and websockets, held to the versions installed.

Hearth's socket layer uses websockets' documented sans-I/O `ServerProtocol` and two
hand-overs from uvicorn: the `http=` and `ws=` factories it calls. pyproject.toml bounds
both libraries; an upgrade that changes any of this fails here first, by name.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import weakref
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from server.transport import Socket, release
from tests.conftest import eventually, open_client, serving, test_settings

HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: other, hearth.v1.msgpack\r\n\r\n"
)


def masked(opcode: int, payload: bytes) -> bytes:
    """A client's frame (clients mask theirs), short payloads only."""
    mask = os.urandom(4)
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_websockets_sans_io_server_protocol_does_what_the_socket_relies_on() -> None:
    """Handshake with a chosen subprotocol, a text frame out as an event, a ping answered by
    itself, and the closing handshake, all through the documented methods."""
    chosen: list[Any] = []

    def select(protocol: ServerProtocol, offered: Any) -> Any:
        chosen.append(list(offered))
        return "hearth.v1.msgpack"

    ws = ServerProtocol(select_subprotocol=select, max_size=1024)
    ws.receive_data(HANDSHAKE)
    [request] = ws.events_received()
    assert isinstance(request, Request) and request.path == "/ws"
    response = ws.accept(request)
    ws.send_response(response)
    assert response.status_code == 101 and ws.subprotocol == "hearth.v1.msgpack" and ws.state is State.OPEN
    assert chosen == [["other", "hearth.v1.msgpack"]]
    assert b"".join(ws.data_to_send()).startswith(b"HTTP/1.1 101")
    ws.receive_data(masked(0x1, b"hello") + masked(0x9, b"ping"))
    text, ping = ws.events_received()
    assert isinstance(text, Frame) and text.opcode is Opcode.TEXT and text.data == b"hello" and text.fin
    assert isinstance(ping, Frame) and ping.opcode is Opcode.PING
    assert ws.data_to_send() == [bytes([0x8A, 4]) + b"ping"]  # the pong, unmasked
    ws.send_close(4408, "too slow")
    assert ws.state is State.CLOSING and ws.close_expected()
    ws.receive_data(masked(0x8, (4408).to_bytes(2, "big")))
    [close] = ws.events_received()
    assert close.opcode is Opcode.CLOSE and ws.close_rcvd is not None and ws.close_rcvd.code == 4408
    assert ws.data_to_send()[-1] == b""  # the server ends the stream


def test_websockets_refuses_a_message_over_max_size_by_its_header() -> None:
    """A frame whose header announces more than max_size fails the connection with 1009."""
    ws = ServerProtocol(max_size=1024)
    ws.receive_data(HANDSHAKE)
    ws.send_response(ws.accept(ws.events_received()[0]))
    ws.data_to_send()
    ws.receive_data(bytes([0x82, 0xFE]) + (2048).to_bytes(2, "big"))  # a 2 KiB binary frame, header only
    assert ws.state is State.CLOSING and ws.close_sent is not None and ws.close_sent.code == 1009


def test_a_released_protocol_is_freed_without_the_cycle_collector() -> None:
    """After a clean close, and after a failure (a frame too big, whose exception websockets
    keeps), `server.transport.release` leaves the protocol to reference counting alone."""
    for failing in (False, True):
        ws = ServerProtocol(max_size=1024)
        ws.receive_data(HANDSHAKE)
        ws.send_response(ws.accept(ws.events_received()[0]))
        if failing:
            ws.receive_data(bytes([0x82, 0xFE]) + (2048).to_bytes(2, "big"))
            assert ws.parser_exc is not None
        else:
            ws.receive_data(masked(0x8, (1000).to_bytes(2, "big")))
        freed: list[bool] = []
        weakref.finalize(ws, lambda: freed.append(True))  # noqa: B023 (called before the next loop)
        gc.disable()
        try:
            release(ws)
            del ws
            assert freed == [True], "failing" if failing else "clean"
        finally:
            gc.enable()


async def test_uvicorns_auto_http_protocol_is_importable_and_built_from_its_state() -> None:
    """The gate builds uvicorn's own HTTP protocol with the keyword arguments uvicorn passes."""
    assert issubclass(AutoHTTPProtocol, asyncio.Protocol)
    config = uvicorn.Config(app=lambda scope, receive, send: None)
    config.load()
    protocol = AutoHTTPProtocol(
        config=config, server_state=uvicorn.server.ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    assert hasattr(protocol, "data_received")


async def test_uvicorn_hands_connections_to_the_gate_and_upgrades_to_hearths_socket(tmp_path: Path) -> None:
    """Through uvicorn's `http=` factory every connection is counted at the gate, and through
    its `ws=` factory an upgraded one becomes Hearth's `Socket`, its place handed over."""
    async with serving(test_settings(tmp_path)) as (running, api):
        account = await api.signup()
        await api.http.aclose()
        gate = running.app.state.gate  # its count of connections is the server's alone: no event tells it
        await eventually(lambda: gate.count == 0)
        _, writer = await asyncio.open_connection("127.0.0.1", running.port)
        await eventually(lambda: gate.count == 1)
        writer.close()
        client = await open_client(running, account)
        [conn] = [c for c in running.hub.clients.registry.all() if c.user_id == account.id]
        assert isinstance(conn.wire, Socket) and conn.wire.slot is not None
        await client.close()
        await eventually(lambda: gate.count == 0)
