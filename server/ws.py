"""The /ws endpoint: origin check, encoding, auth first frame, read loop, writer task."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

from rooms.errors import HearthError, RateLimited, TooLarge, Unauthenticated
from server.auth import origin_allowed
from server.closecodes import CLOSE_PROTOCOL, CLOSE_RESTARTING, CLOSE_TOO_MANY, CLOSE_UNAUTHENTICATED
from server.codec import ProtocolViolation, choose_codec
from server.connection import Connection, Disconnected
from server.dispatch import command_id, dispatch, reply_error, throttle
from server.hub import Hub

log = logging.getLogger("hearth.ws")


async def ws_endpoint(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    if hub.draining:  # restarting: the client should try another worker
        await websocket.send_denial_response(PlainTextResponse("restarting", status_code=503))
        return
    if not origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host"), hub.settings.allowed_origins):
        await websocket.close()  # before accept: the handshake is refused with HTTP 403
        return
    offered = websocket.scope.get("subprotocols", [])
    codec = choose_codec(offered, hub.codecs)
    if codec is None:
        await websocket.accept()
        await websocket.close(CLOSE_PROTOCOL, "unknown encoding")
        return
    await websocket.accept(subprotocol=codec.name if offered else None)
    conn = hub.connection(websocket, codec)
    writer = asyncio.create_task(conn.drain(), name=f"writer {conn.id}")
    try:
        if await authenticate(hub, conn):
            reader = conn.reader = asyncio.create_task(read_loop(hub, conn), name=f"reader {conn.id}")
            await asyncio.wait([reader, writer], return_when=asyncio.FIRST_COMPLETED)
            reader.cancel()
            [outcome] = await asyncio.gather(reader, return_exceptions=True)
            if isinstance(outcome, Exception):
                log.error("reader failed conn=%s: %s", conn.id, type(outcome).__name__, exc_info=outcome)
            await hub.leave_all(conn)  # the rooms stop waiting for this client right away
        if conn.closing:
            # The writer sends what is queued, then the close frame; a client that stopped
            # reading holds it until the keepalive gives up on the socket.
            await asyncio.wait([writer], timeout=2 * hub.limits.ping_interval)
    finally:
        writer.cancel()
        await hub.forget(conn)
        if conn.user is not None:
            log.info("disconnected conn=%s user=%s", conn.id, conn.user.id)


async def next_frame(hub: Hub, conn: Connection) -> dict[str, Any] | None:
    """Read and decode one frame. A frame over `max_frame` is answered `too_large` (None is
    returned); one that is not a decodable map closes the connection with 4400."""
    payload = await conn.receive()
    size = len(payload) if isinstance(payload, bytes) or len(payload) * 4 <= hub.limits.max_frame else None
    if size is None:
        size = len(payload.encode("utf-8", "surrogatepass"))  # type: ignore[union-attr]
    try:
        frame = conn.codec.decode(payload)
    except ProtocolViolation as exc:
        if size <= hub.limits.max_frame:
            log.info("protocol violation conn=%s: %s", conn.id, exc)
            conn.close_soon(CLOSE_PROTOCOL, "protocol violation")
            raise Disconnected from exc
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
            frame = await next_frame(hub, conn)
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
    log.info("connected conn=%s user=%s encoding=%s", conn.id, user.id, conn.codec.name)
    conn.send({"id": frame["id"], "result": {"user": user.public(), "heartbeat": hub.limits.ping_interval}})
    return True


async def read_loop(hub: Hub, conn: Connection) -> None:
    try:
        while not conn.closing:
            frame = await next_frame(hub, conn)
            if frame is not None:
                await dispatch(hub, conn, frame)
    except Disconnected:
        return
