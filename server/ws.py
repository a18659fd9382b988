"""The /ws endpoint: origin check, encoding, auth first frame, then the read loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from rooms.errors import HearthError, RateLimited, TooLarge, Unauthenticated
from server.auth import origin_allowed
from server.closecodes import CLOSE_INTERNAL, CLOSE_PROTOCOL, CLOSE_RESTARTING, CLOSE_TOO_MANY, CLOSE_UNAUTHENTICATED
from server.codec import ProtocolViolation, choose_codec
from server.connection import Connection, Disconnected, Wire
from server.dispatch import command_id, dispatch, reply_error, throttle
from server.hub import Hub
from server.transport import WIRE

log = logging.getLogger("hearth.ws")


async def ws_endpoint(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    if hub.draining:  # restarting: the client should try another worker
        await websocket.send_denial_response(PlainTextResponse("restarting", status_code=503))
        return
    if not origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host"), hub.settings):
        log.info("websocket refused: origin not allowed")
        await websocket.close()  # before accept: the handshake is refused with HTTP 403
        return
    wire: Wire | None = websocket.scope.get("extensions", {}).get(WIRE)
    if wire is None:
        log.error("websocket refused: this server does not run Hearth's websocket protocol (use `hearth serve`)")
        await websocket.close()
        return
    offered = websocket.scope.get("subprotocols", [])
    codec = choose_codec(offered, hub.codecs)
    if codec is None:
        await websocket.accept()
        await websocket.close(CLOSE_PROTOCOL, "unknown encoding")
        return
    await websocket.accept(subprotocol=codec.name if offered else None)
    del websocket  # Starlette's view of the handshake (with its headers) is not kept for hours
    conn = hub.connection(wire, codec)
    try:
        if await authenticate(hub, conn):
            log.info("connected conn=%s user=%s encoding=%s", conn.id, conn.user_id, codec.name)
        # Commands until the socket closes. After a close is asked for (a failed auth, a
        # removal, 4408), frames are read and ignored until the close frame has gone out.
        # (Here rather than in a coroutine of its own: each one is held for the socket's life.)
        while True:
            frame = decode_frame(hub, conn, await conn.receive())
            if frame is not None and not conn.closing:
                await dispatch(hub, conn, frame)
    except Disconnected:
        pass
    except Exception as exc:
        log.error("reader failed conn=%s: %s", conn.id, type(exc).__name__, exc_info=exc)
        conn.close_soon(CLOSE_INTERNAL, "internal error")
    finally:
        wire.on_writable = None  # the socket no longer refers back to the connection
        await hub.forget(conn)
        if conn.user is not None:
            log.info("disconnected conn=%s user=%s", conn.id, conn.user.id)


def decode_frame(hub: Hub, conn: Connection, message: Any) -> dict[str, Any] | None:
    """Decode the frame in a `conn.receive()` message (Disconnected for the close). A frame
    over `max_frame` is answered `too_large` (None is returned); one that is not a decodable
    map closes the connection with 4400. Not a coroutine: an idle connection holds one
    suspended coroutine fewer."""
    payload = conn.payload(message)
    size = len(payload) if isinstance(payload, bytes) or len(payload) * 4 <= hub.limits.max_frame else None
    if size is None:
        size = len(payload.encode("utf-8", "surrogatepass"))  # type: ignore[union-attr]
    try:
        frame = conn.codec.decode(payload)
    except ProtocolViolation as exc:
        if size <= hub.limits.max_frame:
            log.info("protocol violation conn=%s: %s", conn.id, exc)
            conn.close_soon(CLOSE_PROTOCOL, "protocol violation")
            return None
        frame = {}
    if size > hub.limits.max_frame:
        try:
            if conn.user is not None:
                throttle(hub, conn)
            raise TooLarge(f"Frames are limited to {hub.limits.max_frame} bytes.")
        except HearthError as error:
            reply_error(conn, command_id(frame), error)
        return None
    return frame


async def authenticate(hub: Hub, conn: Connection) -> bool:
    """The first frame must be `auth` with a valid token, within `auth_timeout` seconds."""
    frame: dict[str, Any] | None = None
    try:
        async with asyncio.timeout(hub.limits.auth_timeout):
            frame = decode_frame(hub, conn, await conn.receive())
            if conn.closing:
                return False
            if frame is None or frame.get("op") != "auth" or command_id(frame) is None:
                conn.close_soon(CLOSE_UNAUTHENTICATED, "authenticate first")
                return False
            user, claims = await hub.accounts.authenticate(frame.get("token"))
            await hub.register(conn, user, claims.jti)
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
