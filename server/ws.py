"""The websocket endpoint: the handshake's checks (path, origin, draining, encoding), then one
task per connection: `auth` first, then commands until the socket closes.

A frame costs nothing before it has been paid for and is small enough: its size is checked
on the bytes, and, once signed in, a token of the connection's rate is spent, before it is
decoded. Before `auth` the socket takes messages of `limits.auth_frame` bytes at most.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from rooms.errors import HearthError, RateLimited, TooLarge, Unauthenticated
from server.auth import origin_allowed
from server.closecodes import (
    CLOSE_BAD_DATA,
    CLOSE_INTERNAL,
    CLOSE_PROTOCOL,
    CLOSE_RESTARTING,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHENTICATED,
)
from server.codec import JSON_PROTOCOL, PROTOCOLS, ProtocolViolation, peek_id
from server.connection import Connection, Disconnected
from server.dispatch import command_id, dispatch, reply_error, throttle
from server.gate import Gate, Ticket
from server.hub import Hub
from server.transport import Incoming, Socket

log = logging.getLogger("hearth.ws")

PATH = "/ws"


def select(ws: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """The first encoding in the client's order that Hearth knows. None when there is no
    offer (JSON, no header in the answer) or only unknown ones (closed with 4400 after the
    handshake: a client can tell that from a refused handshake)."""
    return next((name for name in offered if name in PROTOCOLS), None)


class Endpoint:
    """`/ws` for the sockets of one worker (`server.transport.Endpoint`)."""

    select = staticmethod(select)

    def __init__(self, app: Starlette, gate: Gate) -> None:
        self.app = app
        self.gate = gate
        self.serving: dict[asyncio.Task[None], Connection] = {}  # every socket's task, signed in or not

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.state.hub  # set by the app's lifespan, before the first connection
        return hub

    def slot(self, transport: asyncio.Transport) -> Ticket | None:
        return self.gate.take(transport)

    def check(self, request: Request, socket: Socket) -> tuple[int, str] | None:
        hub = self.hub
        if request.path.partition("?")[0] != PATH:
            return 404, "Not Found\n"
        if hub.draining:  # restarting: the client should try another worker
            return 503, "Restarting: connect again.\n"
        origins, hosts = request.headers.get_all("Origin"), request.headers.get_all("Host")
        if len(origins) > 1 or len(hosts) > 1:
            return 400, "One Origin and one Host, please.\n"
        if not origin_allowed(origins[0] if origins else None, hosts[0] if hosts else None, hub.settings):
            log.info("websocket refused: origin not allowed")
            return 403, "Origin not allowed.\n"
        return None

    def opened(self, socket: Socket, request: Request) -> None:
        hub = self.hub
        offered = request.headers.get_all("Sec-WebSocket-Protocol")
        chosen = socket.ws.subprotocol
        codec = hub.codecs[chosen if chosen is not None else JSON_PROTOCOL]
        conn = hub.clients.connection(socket, codec)
        if chosen is None and offered:
            conn.close_soon(CLOSE_PROTOCOL, "unknown encoding")
        task = asyncio.get_running_loop().create_task(serve(hub, conn))
        self.serving[task] = conn
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        del self.serving[task]

    async def close(self) -> None:
        """Shutting down: close the sockets still open (those not signed in: the hub's drain
        closed the others) with 1012, and wait for their tasks to end (bound it by the caller's
        timeout: a socket is reset `close_timeout` after its close at the latest)."""
        for conn in list(self.serving.values()):
            conn.close_soon(CLOSE_RESTARTING, "restarting: reconnect and resume")
        if self.serving:
            await asyncio.wait(list(self.serving))


async def serve(hub: Hub, conn: Connection) -> None:
    """One connection: `auth`, then its commands one at a time, until the socket closes.
    After a close is asked for (a failed auth, a removal, 4408), frames are read and
    dropped until the close frame has gone out."""
    try:
        if await authenticate(hub, conn):
            log.info("connected conn=%s user=%s encoding=%s", conn.id, conn.user_id, conn.codec.name)
        while True:
            frame = read_frame(hub, conn, conn.payload(await conn.receive()))
            if frame is not None and not conn.closing:
                await dispatch(hub, conn, frame)
    except Disconnected:
        pass
    except Exception as exc:
        log.error("reader failed conn=%s: %s", conn.id, type(exc).__name__, exc_info=exc)
        conn.close_soon(CLOSE_INTERNAL, "internal error")
    finally:
        conn.wire.on_writable = None  # the socket no longer refers back to the connection
        await hub.joins.leave_all(conn)
        await hub.clients.forget(conn)
        if conn.user is not None:
            log.info("disconnected conn=%s user=%s", conn.id, conn.user.id)


def read_frame(hub: Hub, conn: Connection, message: Incoming) -> dict[str, Any] | None:
    """The command in a message, once it is paid for and small enough; None when it was
    answered already (rate_limited, too_large) or closed the connection. Not a coroutine:
    an idle connection holds one suspended coroutine fewer."""
    limits = hub.limits
    try:
        throttle(hub, conn)  # before any work: a refused frame is not even looked at
        if len(message.data) > limits.max_frame:
            raise TooLarge(f"Frames are limited to {limits.max_frame} bytes.")
    except HearthError as error:
        reply_error(conn, peek_id(conn.codec, message.data), error)
        return None
    return decode(conn, message)


def decode(conn: Connection, message: Incoming) -> dict[str, Any] | None:
    """The map in a message; a frame that is not one closes the connection (4400, or 1007
    for a text frame that is not UTF-8)."""
    try:
        return conn.codec.decode(message.text, message.data)
    except ProtocolViolation as exc:
        if message.text and not valid_utf8(message.data):
            conn.close_soon(CLOSE_BAD_DATA, "invalid UTF-8")
        else:
            log.info("protocol violation conn=%s: %s", conn.id, exc)
            conn.close_soon(CLOSE_PROTOCOL, "protocol violation")
        return None


def valid_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


async def authenticate(hub: Hub, conn: Connection) -> bool:
    """The first frame must be a small `auth` with a valid token, within `auth_timeout` seconds."""
    frame: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(hub.limits.auth_timeout):
            # (over `limits.auth_frame`, the socket refused it as its header arrived: 1009)
            frame = decode(conn, conn.payload(await conn.receive()))
            if conn.closing:
                return False
            if frame is None or frame.get("op") != "auth" or command_id(frame) is None:
                conn.close_soon(CLOSE_UNAUTHENTICATED, "authenticate first")
                return False
            user, claims = await hub.accounts.authenticate(frame.get("token"))
            await hub.clients.register(conn, user, claims.jti)
            conn.wire.allow_messages(hub.limits.hard_frame)
    except TimeoutError:
        conn.close_soon(CLOSE_UNAUTHENTICATED, "authentication timed out")
        return False
    except Disconnected:
        return False
    except HearthError as exc:
        reply_error(conn, command_id(frame or {}), exc)
        if isinstance(exc, Unauthenticated):
            conn.close_soon(CLOSE_UNAUTHENTICATED, "not authenticated")
        elif isinstance(exc, RateLimited):
            conn.close_soon(CLOSE_TOO_MANY, "too many connections")
        else:
            log.warning("auth failed conn=%s: %s", conn.id, exc.code)
            conn.close_soon(CLOSE_RESTARTING, "try again")
        return False
    conn.send({"id": frame["id"], "result": {"user": user.public(), "heartbeat": hub.limits.ping_interval}})
    return True
