"""Commands: `OPS` maps each op to its handler; errors become `{"id", "error"}` replies.

Handlers read and check their arguments, call the hub or the domain, and return the
result map (or, for commits, a future of it). No rule lives here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from rooms.errors import BadRequest, Conflict, Forbidden, HearthError, Internal, RateLimited, Unavailable
from rooms.model import Event, RoomId, Seq, iso_ts
from server.closecodes import CLOSE_TOO_MANY
from server.connection import Connection
from server.hub import Hub

log = logging.getLogger("hearth.dispatch")

Reply = Mapping[str, Any] | asyncio.Future[Event] | None  # None: the handler replied itself
Handler = Callable[[Hub, Connection, Mapping[str, Any]], Awaitable[Reply]]
MAX_ID = 2**53 - 1


# Arguments


def arg_str(args: Mapping[str, Any], name: str, *, max_len: int = 200, optional: bool = False) -> Any:
    value = args.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"`{name}` must be a string.")
    if len(value) > max_len:
        raise BadRequest(f"`{name}` is too long.")
    return value


def arg_int(args: Mapping[str, Any], name: str, *, low: int, high: int = MAX_ID, optional: bool = False) -> Any:
    value = args.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"`{name}` must be an integer.")
    if not low <= value <= high:
        raise BadRequest(f"`{name}` must be between {low} and {high}.")
    return value


def arg_bool(args: Mapping[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"`{name}` must be true or false.")
    return value


def joined_room(conn: Connection, args: Mapping[str, Any]) -> RoomId:
    room = RoomId(arg_str(args, "room", max_len=64))
    if room not in conn.rooms:
        raise Forbidden("You have not joined this room.")
    return room


def _stamp(event: Event) -> dict[str, Any]:
    return {"seq": event.seq, "ts": iso_ts(event.ts)}


# Handlers


async def op_auth(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    raise Conflict("This connection is already signed in.")


async def op_join(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    assert conn.user is not None
    room_id = RoomId(arg_str(args, "room", max_len=64))
    since = arg_int(args, "since", low=0, optional=True)
    room = await hub.service.open_room(conn.user, room_id)
    cid = args["id"]
    await hub.join(conn, room, since, lambda result: conn.send({"id": cid, "result": result}))
    return None


async def op_leave(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    await hub.leave(conn, joined_room(conn, args))
    return {}


async def op_send(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    assert conn.user is not None
    room = joined_room(conn, args)
    text = arg_str(args, "text", max_len=hub.limits.max_frame)
    client_id = arg_str(args, "client_id", max_len=64)
    reply_to = arg_int(args, "reply_to", low=1, optional=True)
    latest = hub.feeds[room].last if room in hub.feeds else Seq(0)
    new = hub.service.new_message(conn.user, room, text, client_id, reply_to, latest)
    await hub.check_user_rate(conn.user)
    return hub.committer.submit(new)


async def op_edit(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    assert conn.user is not None
    room = joined_room(conn, args)
    target = Seq(arg_int(args, "target", low=1))
    text = arg_str(args, "text", max_len=hub.limits.max_frame)
    client_id = arg_str(args, "client_id", max_len=64, optional=True)
    new = await hub.service.new_edit(conn.user, room, target, text, client_id)
    await hub.check_user_rate(conn.user)
    return hub.committer.submit(new)


async def op_delete(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    assert conn.user is not None
    room = joined_room(conn, args)
    target = Seq(arg_int(args, "target", low=1))
    client_id = arg_str(args, "client_id", max_len=64, optional=True)
    new = await hub.service.new_delete(conn.user, room, target, client_id)
    await hub.check_user_rate(conn.user)
    return hub.committer.submit(new)


async def op_react(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    assert conn.user is not None
    room = joined_room(conn, args)
    target = Seq(arg_int(args, "target", low=1))
    emoji = arg_str(args, "emoji", max_len=64)
    client_id = arg_str(args, "client_id", max_len=64, optional=True)
    new = hub.service.new_reaction(conn.user, room, target, emoji, arg_bool(args, "remove"), client_id)
    await hub.check_user_rate(conn.user)
    return hub.committer.submit(new)


async def op_history(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    room = joined_room(conn, args)
    before = arg_int(args, "before", low=1, optional=True)
    limit = arg_int(args, "limit", low=1, high=hub.limits.history_max, optional=True) or 50
    events = await hub.store.read_before(room, before, limit)
    return {"events": [e.to_wire() for e in events]}


async def op_typing(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    await hub.typing(conn, joined_room(conn, args))
    return {}


async def op_ping(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    return {"ts": iso_ts(datetime.now(UTC))}


OPS: dict[str, Handler] = {
    "auth": op_auth,
    "join": op_join,
    "leave": op_leave,
    "send": op_send,
    "edit": op_edit,
    "delete": op_delete,
    "react": op_react,
    "history": op_history,
    "typing": op_typing,
    "ping": op_ping,
}

# The boundary


def command_id(frame: Mapping[str, Any]) -> int | None:
    value = frame.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
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
    conn.send({"id": cid, "error": error.to_wire()})


def _reply_later(conn: Connection, cid: int, future: asyncio.Future[Event]) -> None:
    exc = future.exception()
    if exc is None:
        conn.send({"id": cid, "result": _stamp(future.result())})
    elif isinstance(exc, HearthError):
        reply_error(conn, cid, exc)
    else:
        reply_error(conn, cid, Internal("Something went wrong on our side."))


async def dispatch(hub: Hub, conn: Connection, frame: Mapping[str, Any]) -> None:
    """Run one command and push its reply (now, or when its commit completes)."""
    cid = command_id(frame)
    op = frame.get("op")
    try:
        throttle(hub, conn)
        if cid is None:
            raise BadRequest("`id` must be a non-negative integer.")
        if hub.draining:
            raise Unavailable("Hearth is restarting. Reconnect and resume.")
        handler = OPS.get(op) if isinstance(op, str) else None
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
