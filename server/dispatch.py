"""The boundary between a connection and its commands: `OPS` maps each op to its handler
(server.commands, server.session_commands); `dispatch` runs one command and turns what it
raises into the reply `{"id", "error"}`. No rule lives here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from rooms import fields
from rooms.errors import BadRequest, HearthError, Internal, RateLimited, Unavailable
from rooms.model import Event
from server import commands, safety_commands, session_commands
from server.closecodes import CLOSE_TOO_MANY
from server.commands import Handler, stamp
from server.connection import Connection
from server.hub import Hub

log = logging.getLogger("hearth.dispatch")

OPS: dict[str, Handler] = {**commands.OPS, **session_commands.OPS, **safety_commands.OPS}


def command_id(frame: Mapping[str, Any]) -> int | None:
    value = frame.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= fields.MAX_ID:
        return value
    return None


def throttle(hub: Hub, conn: Connection) -> None:
    """Spend one of the connection's tokens on a frame; after too many refusals in a row, close 4429."""
    wait = conn.bucket.take(hub.clock())
    if not wait:
        conn.strikes = 0
        return
    conn.strikes += 1
    if conn.strikes > hub.limits.strikes:
        conn.close_soon(CLOSE_TOO_MANY, "too many requests")
    raise RateLimited("Too many commands. Slow down.", retry_after=wait)


def reply_error(conn: Connection, cid: int | None, error: HearthError) -> None:
    conn.metrics.errors.labels(error.code).inc()
    conn.send({"id": cid, "error": error.to_wire()})


def _reply_later(conn: Connection, cid: int, future: asyncio.Future[Event]) -> None:
    exc = future.exception()
    if exc is None:
        conn.send({"id": cid, "result": stamp(future.result())})
    elif isinstance(exc, HearthError):
        reply_error(conn, cid, exc)
    else:
        reply_error(conn, cid, Internal("Something went wrong on our side."))


async def dispatch(hub: Hub, conn: Connection, frame: Mapping[str, Any]) -> None:
    """Run one command and push its reply (now, or when its commit completes). Its frame
    was paid for when it was read (`server.ws.read_frame`)."""
    cid = command_id(frame)
    op = frame.get("op")
    try:
        if cid is None:
            raise BadRequest("`id` must be a non-negative integer.")
        if hub.draining:
            raise Unavailable("Hearth is restarting. Reconnect and resume.")
        handler = OPS.get(op) if isinstance(op, str) else None
        hub.metrics.commands.labels(op if handler is not None else "unknown").inc()
        if handler is None:
            raise BadRequest("Unknown op." if isinstance(op, str) else "`op` must be a string.")
        result = await handler(hub, conn, frame)
        if isinstance(result, asyncio.Future):
            result.add_done_callback(partial(_reply_later, conn, cid))
        elif result is not None:
            conn.send({"id": cid, "result": result})
    except HearthError as exc:
        reply_error(conn, cid, exc)  # dropped if the connection is closing (4429)
    except Exception:
        log.exception("op failed conn=%s user=%s op=%s", conn.id, conn.user_id, op if op in OPS else "?")
        reply_error(conn, cid, Internal("Something went wrong on our side."))
