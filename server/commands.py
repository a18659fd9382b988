"""The commands of a room: join, leave, send, edit, delete, react, history, typing, ping.

A handler reads its arguments (`rooms.fields`), asks the domain (`rooms.service`,
`rooms.live`), and returns the result map, or a future of it for a commit (its reply then
goes out once the event is durable: `server.committer`). No rule lives here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from rooms import fields, live, policy
from rooms.clock import iso_ts
from rooms.errors import Conflict, Forbidden
from rooms.model import Event, NewEvent, RoomId, Seq, User
from server.connection import Connection
from server.hub import Hub

Reply = Mapping[str, Any] | asyncio.Future[Event] | None  # None: the handler replied itself
Handler = Callable[[Hub, Connection, Mapping[str, Any]], Awaitable[Reply]]


def signed_in(conn: Connection) -> User:
    assert conn.user is not None  # commands run only once `auth` succeeded
    return conn.user


def joined_room(conn: Connection, args: Mapping[str, Any]) -> RoomId:
    room = RoomId(fields.string(args, "room", max_len=fields.ID))
    if room not in conn.rooms:
        raise Forbidden("You have not joined this room.")
    return room


def may_post(hub: Hub, conn: Connection, room: RoomId, *, message: bool = False) -> None:
    """The lobby and removal rules for anything a member does in a room; for a `message`,
    mute and floor-only mode too."""
    live.may_send(hub.fanout.feeds[room].live, conn.user_id, staff=room in conn.facilitating, message=message)


def stamp(event: Event) -> dict[str, Any]:
    return {"seq": event.seq, "ts": iso_ts(event.ts)}


async def durable(hub: Hub, user: User, new: NewEvent) -> Reply:
    """A durable event of `user`'s, charged to their event rate and queued for the commit."""
    await hub.quotas.events(user)
    return hub.committer.submit(new)


def text(hub: Hub, args: Mapping[str, Any], name: str) -> str:
    """Text for people: any string a frame can hold; its own limit is the domain's (too_large)."""
    return fields.string(args, name, max_len=hub.limits.max_frame)


# Rooms


async def op_auth(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    raise Conflict("This connection is already signed in.")


async def op_join(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    user = signed_in(conn)
    room_id = RoomId(fields.string(args, "room", max_len=fields.ID))
    since = fields.maybe_integer(args, "since", low=0)
    on_duty = fields.flag(args, "on_duty")
    policy.require_on_duty(user, on_duty)
    room, facilitator = await hub.service.open_room(user, room_id)
    conn.mark(room.id, on_duty=on_duty)
    cid = args["id"]
    reply = lambda result: conn.send({"id": cid, "result": result})  # noqa: E731
    await hub.joins.join(conn, room, since, reply, facilitator=facilitator)
    return None


async def op_leave(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    await hub.joins.leave(conn, joined_room(conn, args))
    return {}


# Messages


async def op_send(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    user, room = signed_in(conn), joined_room(conn, args)
    body = text(hub, args, "text")
    client_id = fields.string(args, "client_id", max_len=fields.ID)
    reply_to = fields.maybe_integer(args, "reply_to", low=1)
    may_post(hub, conn, room, message=True)
    latest = hub.fanout.feeds[room].last
    return await durable(hub, user, hub.service.new_message(user, room, body, client_id, reply_to, latest))


def _on_a_message(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> tuple[User, RoomId, Seq, str | None]:
    """What an edit, a deletion and a reaction share: who, where, which message, and the
    client's id for the change."""
    user, room = signed_in(conn), joined_room(conn, args)
    may_post(hub, conn, room)
    target = Seq(fields.integer(args, "target", low=1))
    return user, room, target, fields.maybe_string(args, "client_id", max_len=fields.ID)


async def op_edit(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    user, room, target, client_id = _on_a_message(hub, conn, args)
    new = await hub.service.new_edit(user, room, target, text(hub, args, "text"), client_id)
    return await durable(hub, user, new)


async def op_delete(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    user, room, target, client_id = _on_a_message(hub, conn, args)
    return await durable(hub, user, await hub.service.new_delete(user, room, target, client_id))


async def op_react(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    user, room, target, client_id = _on_a_message(hub, conn, args)
    emoji = fields.string(args, "emoji", max_len=64)
    new = hub.service.new_reaction(user, room, target, emoji, fields.flag(args, "remove"), client_id)
    return await durable(hub, user, new)


async def op_history(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    room = joined_room(conn, args)
    before = fields.maybe_integer(args, "before", low=1)
    limit = fields.maybe_integer(args, "limit", low=1, high=hub.limits.history_max) or 50
    wire = [e.to_wire() for e in await hub.store.read_before(room, None if before is None else Seq(before), limit)]
    if conn.id in hub.fanout.feeds[room].waiting:  # in a session's lobby: its outline and their own
        shown = [dict(seen) for e in wire if (seen := live.for_lobby(e, conn.user_id)) is not None]
    else:
        shown = [e for e in wire if conn.sees(room, e)]
    return {"events": hub.joins.within_reply(conn, shown)}


async def op_typing(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    room = joined_room(conn, args)
    may_post(hub, conn, room)
    await hub.joins.typing(conn, room)
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
