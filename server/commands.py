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

from rooms import fields, live
from rooms.clock import iso_ts
from rooms.errors import Banned, Conflict, Forbidden, RateLimited
from rooms.model import Event, Member, NewEvent, RoomId, Seq, User
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


def member_in(conn: Connection, args: Mapping[str, Any]) -> tuple[Member, RoomId]:
    """Who the user is in the joined room the command names, and that room."""
    room = joined_room(conn, args)
    return conn.members[room], room


def may_post(hub: Hub, conn: Connection, room: RoomId, *, message: bool = False) -> None:
    """The lobby and removal rules for anything a member does in a room; for a `message`,
    mute and floor-only mode too."""
    live.may_send(hub.fanout.feeds[room].live, conn.who(room), conn.standing(room), message=message)


def stamp(event: Event) -> dict[str, Any]:
    return {"seq": event.seq, "ts": iso_ts(event.ts)}


async def durable(hub: Hub, conn: Connection, new: NewEvent) -> Reply:
    """A durable event of the connection's user, charged to their event rate and queued for
    the commit."""
    await hub.quotas.events(signed_in(conn))
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
    room = await hub.service.room(room_id)
    standing = await hub.service.entry(
        user, room, on_duty=on_duty
    )  # before the agreements: a group's own is its members'
    member = await hub.members.enter(user, room)
    conn.members[room.id] = member  # (a join again on this connection takes the card as it is now)
    try:
        if await hub.communities.banned(room.community, user.id):  # banned while it was checked
            raise Banned("This account is banned from this community.")
    except BaseException:
        if room.id not in conn.rooms:
            del conn.members[room.id]
        raise
    conn.mark(room.id, on_duty=on_duty)
    cid = args["id"]
    reply = lambda result: conn.send({"id": cid, "result": result})  # noqa: E731
    try:
        await hub.joins.join(conn, room, since, reply, standing)
    finally:
        if room.id not in conn.rooms:
            conn.members.pop(room.id, None)
    return None


async def op_leave(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    await hub.joins.leave(conn, joined_room(conn, args))
    return {}


# Messages


async def op_send(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    member, room = member_in(conn, args)
    body = text(hub, args, "text")
    client_id = fields.string(args, "client_id", max_len=fields.ID)
    reply_to = fields.maybe_integer(args, "reply_to", low=1)
    may_post(hub, conn, room, message=True)
    await hub.members.require_unmuted(member)
    if slow := hub.service.may_speak(await hub.service.room(room), conn.standing(room)):
        wait = await hub.quotas.take(f"slow:{room}:{member.id}", 1 / slow, 1)
        if wait:
            raise RateLimited(f"This room is in slow mode: one message every {slow} s.", retry_after=wait)
    latest = hub.fanout.feeds[room].last
    return await durable(hub, conn, hub.service.new_message(member, room, body, client_id, reply_to, latest))


def _on_a_message(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> tuple[Member, RoomId, Seq, str | None]:
    """What an edit, a deletion and a reaction share: who, where, which message, and the
    client's id for the change."""
    member, room = member_in(conn, args)
    may_post(hub, conn, room)
    target = Seq(fields.integer(args, "target", low=1))
    return member, room, target, fields.maybe_string(args, "client_id", max_len=fields.ID)


async def op_edit(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    member, room, target, client_id = _on_a_message(hub, conn, args)
    await hub.members.require_unmuted(member)  # (deleting one's own message stays possible)
    new = await hub.service.new_edit(member, room, target, text(hub, args, "text"), client_id)
    return await durable(hub, conn, new)


async def op_delete(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    member, room, target, client_id = _on_a_message(hub, conn, args)
    return await durable(hub, conn, await hub.service.new_delete(member, room, target, client_id))


async def op_redact(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    """Staff take a message's text out of the store (docs/protocol.md §3.6a); audited."""
    member, room = member_in(conn, args)
    target = Seq(fields.integer(args, "target", low=1))
    reason = text(hub, args, "reason")
    new = await hub.service.new_redaction(member, conn.standing(room), room, target, reason)
    done = await durable(hub, conn, new)
    assert isinstance(done, asyncio.Future)
    event = await done
    await hub.audit.record(
        signed_in(conn).id, "redact", community=member.community, room=room, target=str(target), reason=reason
    )
    return stamp(event)


async def op_react(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    member, room, target, client_id = _on_a_message(hub, conn, args)
    await hub.members.require_unmuted(member)
    emoji = fields.string(args, "emoji", max_len=64)
    new = hub.service.new_reaction(member, room, target, emoji, fields.flag(args, "remove"), client_id)
    return await durable(hub, conn, new)


async def op_history(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    room = joined_room(conn, args)
    before = fields.maybe_integer(args, "before", low=1)
    limit = fields.maybe_integer(args, "limit", low=1, high=hub.limits.history_max) or 50
    wire = [e.to_wire() for e in await hub.store.read_before(room, None if before is None else Seq(before), limit)]
    if conn.id in hub.fanout.feeds[room].waiting:  # in a session's lobby: its outline and their own
        shown = [dict(seen) for e in wire if (seen := live.for_lobby(e, conn.who(room))) is not None]
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
    "redact": op_redact,
    "history": op_history,
    "typing": op_typing,
    "ping": op_ping,
}
