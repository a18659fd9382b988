"""The scheduler: what the calendar makes happen by itself, once, however many workers run.

Every worker ticks; each due change is made under the room's session lease (one change at
a time per room, `LiveDesk.turn`) after reading the room's state again, or under a lock of
its own, so a second worker that sees it due finds it done:
- reminders N minutes before an occurrence: a row per registered member in the
  notification outbox (unique, so a repeat inserts nothing, and only who got a new row is
  reminded) and a `reminder` event to those of them who are online, on whatever worker;
- the lobby opening `lobby_minutes` before the start;
- the end of an occurrence still open long after its end (`server.live.END_GRACE`).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from rooms import live
from rooms.clock import iso_ts
from rooms.errors import HearthError
from rooms.model import HEARTH, EventKind, NewEvent, RoomId
from rooms.ports import ScheduleStore
from rooms.schedule import Occurrence
from rooms.schedule_rules import due
from server.live import END_GRACE

if TYPE_CHECKING:
    from server.hub import Hub

log = logging.getLogger("hearth.scheduler")

LOOK_BACK = timedelta(hours=11)  # occurrences are at most 10 hours long, plus the grace
LOOK_AHEAD = timedelta(hours=25)  # reminders are at most a day ahead


class Scheduler:
    def __init__(self, hub: Hub, schedule: ScheduleStore, *, interval: float) -> None:
        self.hub = hub
        self.schedule = schedule
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick(datetime.now(UTC))
            except HearthError as exc:
                log.warning("scheduler tick: %s", exc.code)
            except Exception:
                log.exception("scheduler tick failed")
            await asyncio.sleep(self.interval)

    async def tick(self, now: datetime) -> None:
        for occurrence in await self.schedule.occurrences_between(now - LOOK_BACK, now + LOOK_AHEAD):
            try:  # one occurrence's trouble does not hold up the others
                await self._due(occurrence, now)
            except HearthError as exc:
                log.warning("scheduler session=%s: %s", occurrence.session, exc.code)

    async def _due(self, occurrence: Occurrence, now: datetime) -> None:
        what = due(occurrence, now, end_grace=timedelta(seconds=END_GRACE))
        if what.remind:
            await self._remind(occurrence)
        if what.open:
            await self._open(occurrence)
        if what.end:
            await self._end(occurrence)

    async def _remind(self, occurrence: Occurrence) -> None:
        """Remind each registered member once: the outbox's unique key decides who is new, so
        someone who registers inside the reminder window is reminded at the next tick."""
        lease = await self.hub.shared.locks.acquire(f"remind:{occurrence.session}:{occurrence.key_text}", 30)
        if lease is None:
            return  # another worker is at it right now
        try:
            room = await self.hub.service.room(occurrence.room)
            registered = await self.schedule.registered(occurrence.session, occurrence.key)
            users = await self.hub.members.in_good_standing(room.community, registered)  # not the banned
            event = {
                "ev": "reminder",
                "room": occurrence.room,
                "session": occurrence.session,
                "key": occurrence.key_text,
                "title": occurrence.title,
                "starts_at": iso_ts(occurrence.start),
                "lobby_opens_at": iso_ts(occurrence.start - timedelta(minutes=occurrence.lobby_minutes)),
            }
            fresh = await self.hub.outbox.enqueue("reminder", users, occurrence.session, occurrence.key_text, event)
            if fresh:
                await self.hub.notices.notify(fresh, event)
                log.info("reminder session=%s users=%d", occurrence.session, len(fresh))
        finally:
            await self.hub.shared.locks.release(lease)

    async def _state(self, room: RoomId) -> live.LiveRoom:
        state = live.LiveRoom()
        for event in await self.hub.store.read_session(room, await self.hub.store.last_seq(room)):
            state.apply(event.to_wire())
        return state

    async def _open(self, occurrence: Occurrence) -> None:
        if not self._due_to_open(await self._state(occurrence.room), occurrence):
            return
        async with self.hub.desk.turn(occurrence.room):  # one session change at a time in the room
            state = await self._state(occurrence.room)  # again, now that nobody else changes it
            if not self._due_to_open(state, occurrence):
                return
            room = await self.hub.service.room(occurrence.room)
            facilitators = await self.hub.members.ids_in(room.community, occurrence.facilitators)
            registered = await self.schedule.registered(occurrence.session, occurrence.key)
            body = live.plan_open(
                state,
                key=occurrence.key_text,
                title=occurrence.title,
                starts_at=iso_ts(occurrence.start),
                ends_at=iso_ts(occurrence.end),
                agreement=occurrence.agreement,
                facilitators=facilitators,
                capacity=occurrence.capacity,
                auto_admit=occurrence.auto_admit,
                registered=await self.hub.members.ids_in(room.community, registered),
                present=[card["id"] for card in await self.hub.roster.members(occurrence.room)],
            )
            await self.hub.committer.submit(NewEvent(occurrence.room, EventKind.SESSION, HEARTH, body))
        log.info("lobby opened room=%s session=%s", occurrence.room, occurrence.session)

    @staticmethod
    def _due_to_open(state: live.LiveRoom, occurrence: Occurrence) -> bool:
        """Not while another session is open, and never twice (nor again after its facilitator
        ended it early)."""
        current = state.session
        return state.active is None and (current is None or current.key != occurrence.key_text)

    async def _end(self, occurrence: Occurrence) -> None:
        session = (await self._state(occurrence.room)).active
        if session is None or session.key != occurrence.key_text:
            return  # the common case: ended already
        async with self.hub.desk.turn(occurrence.room):
            session = (await self._state(occurrence.room)).active
            if session is not None and session.key == occurrence.key_text:
                body = {"action": "ended", "reason": "time"}
                await self.hub.committer.submit(NewEvent(occurrence.room, EventKind.SESSION, HEARTH, body))
