"""Connection: one client socket, its codec, its user and its bounded outbox."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from rooms.limits import TokenBucket
from rooms.live import visible
from rooms.model import ConnId, RoomId, User
from server.closecodes import CLOSE_TOO_SLOW
from server.codec import Codec
from server.metrics import Metrics
from server.settings import Limits

log = logging.getLogger("hearth.ws")


class Disconnected(Exception):
    """The client went away (or the server is closing the socket)."""


class Connection:
    """A client's socket as the hub sees it.

    `push()` never waits: frames go to a bounded outbox that `drain()`, the only task that
    writes to the socket, empties. A full outbox closes the connection with 4408, so one
    slow phone never holds a room back; it catches up later by resuming with `since`.
    """

    def __init__(self, ws: WebSocket, codec: Codec, limits: Limits, now: float, metrics: Metrics) -> None:
        self.metrics = metrics
        self.id = ConnId(secrets.token_hex(8))
        self.ws = ws
        self.codec = codec
        self.limits = limits
        self.user: User | None = None
        self.token_id = ""
        self.rooms: set[RoomId] = set()
        self.facilitating: set[RoomId] = set()  # rooms where this user runs sessions: sees private events
        self.on_duty: set[RoomId] = set()  # rooms where this staff member is shown as on duty
        self.bucket = TokenBucket(limits.rate, limits.burst, now)
        self.strikes = 0
        self._outbox: deque[str | bytes] = deque()
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self.reader: asyncio.Task[None] | None = None  # stopped when a close is asked for

    @property
    def user_id(self) -> str:
        return self.user.id if self.user else ""

    def sees(self, room: RoomId, event: Mapping[str, Any]) -> bool:
        """Whether a durable event of `room` may be shown on this connection."""
        return visible(event, self.user_id, facilitator=room in self.facilitating)

    @property
    def closing(self) -> bool:
        return self._close is not None

    # Writing

    def push(self, frame: str | bytes) -> None:
        """Queue an encoded frame; closes with 4408 instead of growing past the limit."""
        if self._close is not None:
            return
        if len(self._outbox) >= self.limits.outbox:
            log.info("outbox full, closing conn=%s user=%s", self.id, self.user_id)
            self.metrics.overflows.inc()
            self._outbox.clear()
            self.close_soon(CLOSE_TOO_SLOW, "too slow: resume with since")
            return
        self._outbox.append(frame)
        self._wake.set()

    def send(self, message: Mapping[str, Any]) -> None:
        self.push(self.codec.encode(message))

    def close_soon(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued are written."""
        if self._close is None:
            self.metrics.closes.labels(str(code)).inc()
            self._close = (code, reason)
            self._wake.set()
            if self.reader is not None and self.reader is not asyncio.current_task():
                self.reader.cancel()  # (a reader closing its own connection stops by itself)

    async def drain(self) -> None:
        """Write queued frames until a close is asked for; then send the close frame."""
        raw = self.ws.scope.get("hearth.send")  # see server.app.RawSend
        key = "bytes" if self.codec.binary else "text"
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outbox:
                    frame = self._outbox.popleft()
                    if raw is not None:
                        await raw({"type": "websocket.send", key: frame})
                    elif self.codec.binary:
                        await self.ws.send_bytes(frame)  # type: ignore[arg-type]
                    else:
                        await self.ws.send_text(frame)  # type: ignore[arg-type]
                if self._close is not None:
                    await self.ws.close(*self._close)
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the socket is gone; the reader sees it too

    # Reading

    async def receive(self) -> str | bytes:
        """The next frame's payload; raises Disconnected when the socket closes."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            raise Disconnected
        if message.get("text") is not None:
            return str(message["text"])
        return bytes(message.get("bytes") or b"")
