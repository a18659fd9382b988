"""The commands of a live session (docs/protocol.md §5a.2): session, admit, deny, knock,
hand, floor, mute, remove, checkin, attendance.

Each plans its change against the session as it stands (`rooms.live.plan_*`, which decide
and refuse) and commits it, one change at a time per room across workers (`committed`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from rooms import fields, live
from rooms.clock import iso_ts, now_ms
from rooms.errors import BadRequest
from rooms.live.events import SessionBody
from rooms.permissions import Op, require
from server.commands import Handler, Reply, joined_room, signed_in, stamp, text
from server.connection import Connection
from server.feed import RoomFeed
from server.hub import Hub

Plan = Callable[[], SessionBody | list[SessionBody]]


def live_room(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> tuple[RoomFeed, live.Actor]:
    """The joined room's feed, and who acts there: the member id the user has there (who a
    session knows) and their standing (what the permission matrix asks)."""
    room = joined_room(conn, args)
    return hub.fanout.feeds[room], live.Actor(conn.who(room), conn.standing(room))


async def committed(hub: Hub, conn: Connection, feed: RoomFeed, plan: Plan) -> Reply:
    """Plan a session change against the current state and commit it, one change at a time
    per room across workers (so two facilitators cannot both take the last place)."""
    user = signed_in(conn)
    await hub.quotas.events(user)  # before queueing for the turn: a refused storm holds no lease
    async with hub.desk.turn(feed.room, feed):
        planned = plan()
        bodies = planned if isinstance(planned, list) else [planned]
        for _ in bodies[1:]:  # a command that commits several events (a check-in answer) pays for each
            await hub.quotas.events(user)
        event = await hub.desk.commit(feed, conn.members[feed.room], *bodies)
    return stamp(event)


def who(args: Mapping[str, Any]) -> str:
    return fields.string(args, "user", max_len=fields.ID)


async def op_session(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    """open | start | end | lock | unlock | floor_only | pin | lead"""
    feed, user = live_room(hub, conn, args)
    action = fields.string(args, "action", max_len=20)
    plan: Plan
    if action == "open":
        require(Op.SESSION_OPEN, user.standing)
        minutes = fields.maybe_integer(args, "minutes", low=5, high=600) or 60
        title, agreement = live.opening_texts(
            fields.maybe_string(args, "title", max_len=hub.limits.max_frame),
            fields.maybe_string(args, "agreement", max_len=hub.limits.max_frame),
        )
        co = live.co_facilitator_ids(args.get("co_facilitators", []))  # member ids of the room's community
        community = conn.members[feed.room].community
        accounts = [await hub.members.account(community, member) for member in co]
        if None in accounts:  # not a member here: no facilitator of this room either
            raise BadRequest("Co-facilitators must be facilitators of this room.")
        await hub.service.check_co_facilitators(feed.room, [a for a in accounts if a is not None])
        now = datetime.now(UTC)
        plan = partial(
            live.plan_open,
            feed.live,
            key=f"adhoc-{iso_ts(now)}",
            title=title,
            starts_at=iso_ts(now),
            ends_at=iso_ts(now + timedelta(minutes=minutes)),
            agreement=agreement,
            facilitators=[user.id, *[u for u in co if u != user.id]],
            capacity=fields.maybe_integer(args, "capacity", low=1, high=1000),
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
        kind = fields.string(args, "kind", max_len=20)
        plan = partial(live.plan_pin, feed.live, user, kind, text(hub, args, "text"))
    elif action == "lead":
        plan = partial(live.plan_lead, feed.live, user, who(args))
    else:
        raise BadRequest("Unknown session action.")
    return await committed(hub, conn, feed, plan)


async def op_admit(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    whom = fields.maybe_string(args, "user", max_len=fields.ID)  # none: everyone waiting
    return await committed(hub, conn, feed, partial(live.plan_admit, feed.live, user, whom))


async def op_deny(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    message = fields.maybe_string(args, "message", max_len=hub.limits.max_frame)
    return await committed(hub, conn, feed, partial(live.plan_deny, feed.live, user, who(args), message))


async def op_knock(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    whom = fields.maybe_string(args, "user", max_len=fields.ID)
    return await committed(hub, conn, feed, partial(live.plan_knock, feed.live, user, whom, text(hub, args, "text")))


async def op_hand(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    up = fields.flag(args, "up", default=True)
    return await committed(hub, conn, feed, partial(live.plan_hand, feed.live, user, up))


async def op_floor(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    """give (`user`, optional `seconds`) | take (back) | pass | order (`order`: the queue)"""
    feed, user = live_room(hub, conn, args)
    action = fields.string(args, "action", max_len=20)
    plan: Plan
    if action == "give":
        seconds = fields.maybe_integer(args, "seconds", low=1, high=live.MAX_FLOOR_SECONDS)
        plan = partial(live.plan_floor, feed.live, user, who(args), seconds, now_ms())
    elif action == "take":
        plan = partial(live.plan_floor, feed.live, user, None, None, now_ms())
    elif action == "pass":
        plan = partial(live.plan_pass, feed.live, user)
    elif action == "order":
        plan = partial(live.plan_queue, feed.live, user, fields.ids(args, "order"))
    else:
        raise BadRequest("Unknown floor action.")
    return await committed(hub, conn, feed, plan)


async def op_mute(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    muted = fields.flag(args, "muted", default=True)
    whom = who(args)
    target = await hub.service.target(feed.room, await hub.members.account(conn.members[feed.room].community, whom))
    return await committed(hub, conn, feed, partial(live.plan_mute, feed.live, user, whom, muted, target=target))


async def op_remove(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    feed, user = live_room(hub, conn, args)
    whom = who(args)
    target = await hub.service.target(feed.room, await hub.members.account(conn.members[feed.room].community, whom))
    return await committed(hub, conn, feed, partial(live.plan_remove, feed.live, user, whom, target=target))


async def op_checkin(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    """start (facilitators) | answer with `mood` 1–5 and an optional `word`, or `pass`"""
    feed, user = live_room(hub, conn, args)
    if args.get("action") == "start":
        present = [c["id"] for c in await hub.roster.members(feed.room)]
        return await committed(hub, conn, feed, partial(live.plan_checkin_start, feed.live, user, present))
    mood = fields.maybe_integer(args, "mood", low=1, high=5)
    word = fields.maybe_string(args, "word", max_len=hub.limits.max_frame)
    passed = fields.flag(args, "pass")
    return await committed(hub, conn, feed, partial(live.plan_checkin_entry, feed.live, user, mood, word, passed))


async def op_attendance(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    """Who attended the room's latest session and for how long (facilitators only)."""
    feed, user = live_room(hub, conn, args)
    require(Op.ATTENDANCE, user.standing)
    events = await hub.store.read_session(feed.room, feed.last)
    return live.attendance_report([e.to_wire() for e in events], now_ms())


OPS: dict[str, Handler] = {
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
