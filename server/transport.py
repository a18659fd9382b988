"""The websocket under each connection: uvicorn's sans-I/O protocol, written to directly.

Fan-out writes the same event to every member of a room. Through ASGI that is, per member,
an `await send(...)` that frames the payload again and goes through several coroutine
layers, so each connection needs a task of its own to do the awaiting. Here each event is
encoded and framed once per encoding (`Codec.frame`), and the hub hands those bytes to every
member's transport with one synchronous `write_frame` call: no task, no copy, no await.

uvicorn runs this protocol when `hearth serve` asks for it (`ws=` in `server.serve`); the
protocol puts itself in the websocket scope's extensions under `WIRE`. Frames written here
are complete and unmasked (servers never mask), and per-message compression is off, so the
bytes are the same for every connection of an encoding.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

WIRE = "hearth.wire"  # the scope extension that holds the connection's protocol
HANDSHAKE_LOG = "hearth.handshake"


class Inbox:
    """The protocol's queue of ASGI receive events, for its one reader (the app's task).

    It does what uvicorn asks of its `asyncio.Queue` (put_nowait, get, empty) without the
    Queue's four deques and its Event: an idle connection holds hundreds of bytes, not kilobytes.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items


class Writable:
    """The protocol's writable flag (set, clear, is_set, wait), without an Event's deque."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None  # made by the first wait

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        while not self._set:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            await waiter


class HearthWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol, plus synchronous writes of ready-made frames, and lighter
    per-connection state: a server holds tens of thousands of these, mostly idle."""

    on_writable: Callable[[], None] | None = None  # called when a paused transport drains

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Writable()  # type: ignore[assignment]
        # uvicorn logs every accepted handshake at INFO, with the client's address; Hearth logs
        # its own line per connection (ids only), so this logger shows warnings and errors.
        self.logger = logging.getLogger(HANDSHAKE_LOG)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        if self.response.status_code == 101:  # the app will run: give it the wire
            self.scope["extensions"][WIRE] = self  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            self._forget_handshake()

    def _forget_handshake(self) -> None:
        """Drop what only the handshake needed: an idle connection lives for hours, and its
        request, response and header lists would be a fifth of what it holds. Headers are
        cleared in place: websockets' parser and Starlette's WebSocket share those objects."""
        self.request.headers.clear()
        self.request = self.response = None  # type: ignore[assignment]
        self.scope["headers"].clear()  # type: ignore[attr-defined]
        self.scope["subprotocols"].clear()  # type: ignore[attr-defined]
        # The app took the wire at its start; left here it would make a reference cycle.
        self.scope["extensions"].pop(WIRE, None)

    def connection_lost(self, exc: Exception | None) -> None:
        """uvicorn's, then break the last reference cycle: websockets' parser is a generator
        that holds the websockets protocol it parses for. Without it, and without the scope's
        reference to this protocol (`_forget_handshake`), a closed connection is freed by
        reference counting alone; before, it left 22 objects in cycles (this protocol, its
        transport, the parser and its buffers) for the cycle collector. No data arrives after
        this call, so nothing asks the parser for more."""
        super().connection_lost(exc)
        self.conn.parser = None  # type: ignore[assignment]

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.on_writable is not None:
            self.on_writable()

    @property
    def paused(self) -> bool:
        """The transport's buffer is over its high-water mark: hold frames back."""
        return not self.writable.is_set()

    @property
    def open(self) -> bool:
        return self.handshake_complete and not (self.close_sent or self.disconnected or self.transport.is_closing())

    def write_frame(self, data: bytes) -> None:
        """Write whole frames (from `Codec.frame`); dropped once the socket is closing."""
        if self.open:
            self.transport.write(data)

    def close_with(self, code: int, reason: str) -> None:
        """Send the close frame now: what ASGI's `websocket.close` does, without awaiting.

        The app's pending `receive()` gets the disconnect, so its read loop ends; the
        transport closes when the client answers or after `close_timeout`.
        """
        if not self.open:
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)
