"""Joins: a connection entering and leaving rooms.

Joining attaches the connection to the room's feed (with the events it missed since
`since`), places it in a live session's lobby or in the room (server.live), leases its
presence and tells the room (server.roster). Leaving undoes each, in the other order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rooms import live
from rooms.errors import HearthError
from rooms.hours import status
from rooms.model import Room, RoomId
from rooms.paging import newest_within
from rooms.permissions import Standing
from server.connection import Connection
from server.fanout import Fanout
from server.live import LiveDesk
from server.metrics import Metrics
from server.roster import Roster
from server.settings import Limits

log = logging.getLogger("hearth.hub")


def card(conn: Connection, room: RoomId) -> dict[str, Any]:
    """What others see of a connection's user in a room: their member card; staff on duty
    say so."""
    shown: dict[str, Any] = conn.members[room].public()
    if room in conn.on_duty:
        shown["on_duty"] = True
    return shown


class Joins:
    def __init__(self, fanout: Fanout, roster: Roster, desk: LiveDesk, limits: Limits, metrics: Metrics) -> None:
        self.fanout = fanout
        self.roster = roster
        self.desk = desk
        self.limits = limits
        self.metrics = metrics
        desk.on_admitted = self.arrived  # let in from a lobby: an arrival like any other

    async def join(
        self,
        conn: Connection,
        room: Room,
        since: int | None,
        reply: Callable[[dict[str, Any]], None],
        standing: Standing,
    ) -> None:
        """Attach `conn` to the room's feed, `reply` with the join result, tell the others.
        `standing` is what the user is in the room: it says whether they join as one of its
        facilitators.

        `reply` runs at the very moment `conn` goes live, so the join reply reaches the
        client ahead of every live event. While a session is open, a member who is not in
        it waits in its lobby: they see the session's state and nothing of the room.
        """
        member = conn.members[room.id]
        feed = await self.fanout.open(room.id)  # reserved for this join until the `finally`
        try:
            conn.stand(room.id, standing)
            facilitator = room.id in conn.facilitating
            waiting = await self.desk.arrive(feed, conn, facilitator)
            now = datetime.now(UTC)
            present = [] if waiting else await self.roster.others_then(room.id, card(conn, room.id))

            def go_live(latest: int, events: list[dict[str, Any]], recovered: bool, waiting: bool) -> None:
                # `waiting` as placed now: the session may have let them in meanwhile
                conn.rooms.add(room.id)
                session = feed.live.active
                view = None if session is None else live.session_view(session, member.id, standing, waiting=waiting)
                shown = self.within_reply(conn, events)
                reply(
                    {
                        "room": room.public() | ({"hours": status(room.open_hours, now)} if room.open_hours else {}),
                        "member": member.public(),  # who the user is here: their own `from` and presence card
                        "seq": latest,
                        "presence": present,
                        "events": shown,
                        "recovered": recovered and len(shown) == len(events),
                        "session": view,
                        "waiting": waiting,
                    }
                )

            await feed.attach(conn, since, go_live, waiting=waiting)
        finally:
            feed.reserved -= 1
            if room.id not in conn.rooms:
                conn.stand(room.id, None)
                conn.mark(room.id, on_duty=False)
                await self.fanout.release(feed)
        self.metrics.joins.inc()
        if not waiting and room.id in conn.rooms:  # (not if it was closed meanwhile: a removal)
            await self.arrived(conn, room.id)

    def within_reply(self, conn: Connection, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The newest of `events` that one reply may carry (`limits.reply_bytes`, as encoded
        for this connection): a join or a page of history never holds megabytes for a client."""
        if len(events) < 2:
            return events
        return newest_within(events, self.limits.reply_bytes, lambda e: len(conn.codec.encode(e)))

    async def arrived(self, conn: Connection, room: RoomId) -> None:
        """`conn` is in the room (joined, or let in from the lobby): lease its presence and,
        for a user's first connection there, tell the others and note their attendance."""
        if conn.user is None or room not in conn.rooms or conn.closing:
            return
        shown = card(conn, room)
        if await self.roster.arrive(room, shown["id"], conn.id, shown):
            if (feed := self.fanout.feeds.get(room)) is not None:
                try:  # the join was answered already: a failure here is only logged
                    await self.desk.attendance(feed, shown["id"], present=True)
                except HearthError as exc:
                    log.warning("attendance on arrival failed room=%s: %s", room, exc.code)

    async def leave(self, conn: Connection, room: RoomId) -> None:
        conn.rooms.discard(room)
        conn.stand(room, None)
        conn.mark(room, on_duty=False)
        member = conn.members.pop(room, None)
        feed = self.fanout.feeds.get(room)
        waiting = feed is not None and conn.id in feed.waiting
        if feed is not None:
            feed.detach(conn)
        if member is not None:
            gone = False
            if not waiting:  # the lobby holds no presence
                gone = await self.roster.depart(room, member.id, conn.id, member.public())
            if feed is not None:
                await self.desk.depart(feed, member, gone=gone, waiting=waiting)
        if feed is not None:
            await self.fanout.release(feed)

    async def leave_all(self, conn: Connection) -> None:
        """Leave every room the connection is in (it is closing)."""
        for room in list(conn.rooms):
            try:
                await self.leave(conn, room)
            except Exception:
                log.exception("leave on disconnect failed conn=%s room=%s", conn.id, room)

    async def typing(self, conn: Connection, room: RoomId) -> None:
        await self.roster.typing(room, conn.members[room].public())
