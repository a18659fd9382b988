"""Commands: `OPS` maps each op to its handler; errors become `{"id", "error"}` replies.

Handlers read and check their arguments, call the hub or the domain, and return the
result map (or, for commits, a future of it). No rule lives here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from rooms import live, policy
from rooms.clock import iso_ts, now_ms
from rooms.errors import BadRequest, Conflict, Forbidden, HearthError, Internal, RateLimited, Unavailable
from rooms.model import Event, RoomId, Seq, UserId
from server.closecodes import CLOSE_TOO_MANY
from server.connection import Connection
from server.feed import RoomFeed
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
    on_duty = arg_bool(args, "on_duty")
    if on_duty and not conn.user.role.is_staff:
        raise Forbidden("Only staff can be on duty.")
    room, facilitator = await hub.service.open_room(conn.user, room_id)
    conn.mark(room.id, on_duty=on_duty)
    cid = args["id"]
    reply = lambda result: conn.send({"id": cid, "result": result})  # noqa: E731
    await hub.joins.join(conn, room, since, reply, facilitator=facilitator)
    return None


async def op_leave(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    await hub.joins.leave(conn, joined_room(conn, args))
    return {}


async def op_send(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    assert conn.user is not None
    room = joined_room(conn, args)
    text = arg_str(args, "text", max_len=hub.limits.max_frame)
    client_id = arg_str(args, "client_id", max_len=64)
    reply_to = arg_int(args, "reply_to", low=1, optional=True)
    may_post(hub, conn, room, message=True)
    latest = hub.fanout.feeds[room].last
    new = hub.service.new_message(conn.user, room, text, client_id, reply_to, latest)
    await hub.quotas.events(conn.user)
    return hub.committer.submit(new)


async def op_edit(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    assert conn.user is not None
    room = joined_room(conn, args)
    may_post(hub, conn, room)
    target = Seq(arg_int(args, "target", low=1))
    text = arg_str(args, "text", max_len=hub.limits.max_frame)
    client_id = arg_str(args, "client_id", max_len=64, optional=True)
    new = await hub.service.new_edit(conn.user, room, target, text, client_id)
    await hub.quotas.events(conn.user)
    return hub.committer.submit(new)


async def op_delete(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    assert conn.user is not None
    room = joined_room(conn, args)
    may_post(hub, conn, room)
    target = Seq(arg_int(args, "target", low=1))
    client_id = arg_str(args, "client_id", max_len=64, optional=True)
    new = await hub.service.new_delete(conn.user, room, target, client_id)
    await hub.quotas.events(conn.user)
    return hub.committer.submit(new)


async def op_react(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    assert conn.user is not None
    room = joined_room(conn, args)
    may_post(hub, conn, room)
    target = Seq(arg_int(args, "target", low=1))
    emoji = arg_str(args, "emoji", max_len=64)
    client_id = arg_str(args, "client_id", max_len=64, optional=True)
    new = hub.service.new_reaction(conn.user, room, target, emoji, arg_bool(args, "remove"), client_id)
    await hub.quotas.events(conn.user)
    return hub.committer.submit(new)


def live_room(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> tuple[RoomFeed, str]:
    room = joined_room(conn, args)
    assert conn.user is not None
    return hub.fanout.feeds[room], conn.user.id


async def room_staff(hub: Hub, room: RoomId, user: str) -> bool:
    """Whether `user` is one of the room's staff (its facilitators, admins): whom a session's
    facilitators may not mute or remove. Cached reads; an unknown user is not staff."""
    target = await hub.directory.get_user(UserId(user))
    return target is not None and policy.can_manage_members(target, await hub.directory.member_role(room, target.id))


def may_post(hub: Hub, conn: Connection, room: RoomId, *, message: bool = False) -> None:
    """The lobby and removal rules for anything a member does in a room; for a `message`,
    mute and floor-only mode too."""
    live.may_send(hub.fanout.feeds[room].live, conn.user_id, staff=room in conn.facilitating, message=message)


Plan = Callable[[], Mapping[str, Any] | list[dict[str, Any]]]


async def committed(hub: Hub, conn: Connection, feed: RoomFeed, plan: Plan) -> Reply:
    """Plan a session change against the current state and commit it, one change at a time
    per room across workers (so two facilitators cannot both take the last place)."""
    assert conn.user is not None
    await hub.quotas.events(conn.user)  # before queueing for the turn: a refused storm holds no lease
    async with hub.desk.turn(feed.room, feed):
        planned = plan()
        bodies = planned if isinstance(planned, list) else [planned]
        for _ in bodies[1:]:  # a command that commits several events (a check-in answer) pays for each
            await hub.quotas.events(conn.user)
        event = await hub.desk.commit(feed, conn.user, *bodies)
    return _stamp(event)


async def op_session(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    """open | start | end | lock | unlock | floor_only | pin | lead"""
    feed, user = live_room(hub, conn, args)
    action = arg_str(args, "action", max_len=20)
    plan: Plan
    if action == "open":
        if feed.room not in conn.facilitating:
            raise Forbidden("Only this room's facilitators can open a session.")
        minutes = arg_int(args, "minutes", low=5, high=600, optional=True) or 60
        # Texts are read up to the frame's size: their limits are the domain's, and answer too_large.
        title, agreement = live.opening_texts(
            arg_str(args, "title", max_len=hub.limits.max_frame, optional=True),
            arg_str(args, "agreement", max_len=hub.limits.max_frame, optional=True),
        )
        co = live.co_facilitator_ids(args.get("co_facilitators", []))
        await hub.service.check_co_facilitators(feed.room, co)
        now = datetime.now(UTC)
        plan = partial(
            live.plan_open,
            feed.live,
            key=f"adhoc-{iso_ts(now)}",
            title=title,
            starts_at=iso_ts(now),
            ends_at=iso_ts(now + timedelta(minutes=minutes)),
            agreement=agreement,
            facilitators=[user, *[u for u in co if u != user]],
            capacity=arg_int(args, "capacity", low=1, high=1000, optional=True),
            auto_admit=False,  # automatic admission is for registered members of a scheduled session
            registered=[],
            present=[c["id"] for c in await hub.roster.members(feed.room)],
        )
    elif action in ("start", "end"):
        plan = partial(live.plan_state, feed.live, user, action)
    elif action in ("lock", "unlock"):
        plan = partial(live.plan_setting, feed.live, user, "locked", action == "lock")
    elif action == "floor_only":
        if not isinstance(args.get("on"), bool):
            raise BadRequest("`on` must be true or false.")
        plan = partial(live.plan_setting, feed.live, user, "floor_only", args["on"])
    elif action == "pin":
        kind, text = arg_str(args, "kind", max_len=20), arg_str(args, "text", max_len=hub.limits.max_frame)
        plan = partial(live.plan_pin, feed.live, user, kind, text)
    elif action == "lead":
        plan = partial(live.plan_lead, feed.live, user, arg_str(args, "user", max_len=64))
    else:
        raise BadRequest("Unknown session action.")
    return await committed(hub, conn, feed, plan)


async def op_admit(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    who = arg_str(args, "user", max_len=64, optional=True)  # none: everyone waiting
    return await committed(hub, conn, feed, partial(live.plan_admit, feed.live, user, who))


async def op_deny(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    who = arg_str(args, "user", max_len=64)
    message = arg_str(args, "message", max_len=hub.limits.max_frame, optional=True)
    return await committed(hub, conn, feed, partial(live.plan_deny, feed.live, user, who, message))


async def op_knock(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    who = arg_str(args, "user", max_len=64, optional=True)
    text = arg_str(args, "text", max_len=hub.limits.max_frame)
    return await committed(hub, conn, feed, partial(live.plan_knock, feed.live, user, who, text))


async def op_hand(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    up = args.get("up", True)
    if not isinstance(up, bool):
        raise BadRequest("`up` must be true or false.")
    return await committed(hub, conn, feed, partial(live.plan_hand, feed.live, user, up))


async def op_floor(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    """give (`user`, optional `seconds`) | take (back) | pass | order (`order`: the queue)"""
    feed, user = live_room(hub, conn, args)
    action = arg_str(args, "action", max_len=20)
    plan: Plan
    if action == "give":
        who = arg_str(args, "user", max_len=64)
        seconds = arg_int(args, "seconds", low=1, high=live.MAX_FLOOR_SECONDS, optional=True)
        plan = partial(live.plan_floor, feed.live, user, who, seconds, now_ms())
    elif action == "take":
        plan = partial(live.plan_floor, feed.live, user, None, None, now_ms())
    elif action == "pass":
        plan = partial(live.plan_pass, feed.live, user)
    elif action == "order":
        order = args.get("order")
        if not isinstance(order, list) or not all(isinstance(u, str) for u in order):
            raise BadRequest("`order` must be a list of user ids.")
        plan = partial(live.plan_queue, feed.live, user, order)
    else:
        raise BadRequest("Unknown floor action.")
    return await committed(hub, conn, feed, plan)


async def op_mute(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    muted = args.get("muted", True)
    if not isinstance(muted, bool):
        raise BadRequest("`muted` must be true or false.")
    who = arg_str(args, "user", max_len=live.MAX_USER_ID)
    staff = await room_staff(hub, feed.room, who)
    return await committed(hub, conn, feed, partial(live.plan_mute, feed.live, user, who, muted, staff=staff))


async def op_remove(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    who = arg_str(args, "user", max_len=live.MAX_USER_ID)
    staff = await room_staff(hub, feed.room, who)
    return await committed(hub, conn, feed, partial(live.plan_remove, feed.live, user, who, staff=staff))


async def op_checkin(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    """start (facilitators) | answer with `mood` 1–5 and an optional `word`, or `pass`"""
    feed, user = live_room(hub, conn, args)
    if args.get("action") == "start":
        present = [c["id"] for c in await hub.roster.members(feed.room)]
        return await committed(hub, conn, feed, partial(live.plan_checkin_start, feed.live, user, present))
    mood = arg_int(args, "mood", low=1, high=5, optional=True)
    word = arg_str(args, "word", max_len=hub.limits.max_frame, optional=True)
    passed = arg_bool(args, "pass")
    return await committed(hub, conn, feed, partial(live.plan_checkin_entry, feed.live, user, mood, word, passed))


async def op_attendance(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    """Who attended the room's latest session and for how long (facilitators only)."""
    feed, _ = live_room(hub, conn, args)
    if feed.room not in conn.facilitating:
        raise Forbidden("Only this room's facilitators see attendance.")
    events = await hub.store.read_session(feed.room, feed.last)
    return live.attendance_report([e.to_wire() for e in events], now_ms())


async def op_history(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    room = joined_room(conn, args)
    before = arg_int(args, "before", low=1, optional=True)
    limit = arg_int(args, "limit", low=1, high=hub.limits.history_max, optional=True) or 50
    events = await hub.store.read_before(room, before, limit)
    wire = [e.to_wire() for e in events]
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
    "session": op_session,
    "admit": op_admit,
    "deny": op_deny,
    "knock": op_knock,
    "hand": op_hand,
    "floor": op_floor,
    "mute": op_mute,
    "remove": op_remove,
    "checkin": op_checkin,
    "attendance": op_attendance,
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
    conn.metrics.errors.labels(error.code).inc()
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
