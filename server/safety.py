"""The crisis path, off the path of delivery: what members write is read by the detector
after it is committed and delivered, never before, and never holds a message back.

On a hit (`rooms.safety`), within a second: a case in the community's safety queue; an
`alert` to the staff in the room and the staff on duty anywhere in the community, on every
worker (`server.notices`); the community's crisis resources to the author alone. Only the
worker that committed a message reads it, so each hit opens one case.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from rooms.clock import now_us
from rooms.errors import HearthError
from rooms.model import HEARTH, Event, EventKind, MemberId, RoomId
from rooms.ports import Communities, Directory
from rooms.safety import Detector, Hit
from rooms.safety.cases import Case, CaseKind, CaseService, new_case_id
from server.notices import Notices

log = logging.getLogger("hearth.safety")

BACKLOG = 100_000  # messages waiting to be read; past it (a worker far behind) the newest wait for none


class SafetyWatch:
    def __init__(
        self,
        detector: Detector,
        cases: CaseService,
        directory: Directory,
        communities: Communities,
        notices: Notices,
    ) -> None:
        self.detector = detector
        self.cases = cases
        self.directory = directory
        self.communities = communities
        self.notices = notices
        self._queue: asyncio.Queue[Event] = asyncio.Queue(BACKLOG)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read(), name="safety watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def committed(self, events: Sequence[Event]) -> None:
        """Messages and edits just committed here, queued to be read (never waited on)."""
        for event in events:
            if event.kind in (EventKind.MESSAGE, EventKind.EDIT) and event.sender.get("id") != HEARTH.id:
                try:
                    self._queue.put_nowait(event)
                except asyncio.QueueFull:
                    log.warning("safety watch behind by %d messages: one not read room=%s", BACKLOG, event.room)

    async def _read(self) -> None:
        while True:
            event = await self._queue.get()
            text = event.body.get("text")
            if not isinstance(text, str):
                continue
            hit = self.detector.scan(text)
            if hit is not None:
                try:
                    await self._crisis(event, hit)
                except HearthError as exc:
                    log.warning("crisis case not opened room=%s seq=%s: %s", event.room, event.seq, exc.code)
                except Exception:  # the watch goes on with the next message
                    log.exception("crisis case failed room=%s seq=%s", event.room, event.seq)

    async def _crisis(self, event: Event, hit: Hit) -> None:
        room = await self.directory.get_room(event.room)
        if room is None:
            return
        seq = event.target if event.kind is EventKind.EDIT and event.target is not None else event.seq
        case = Case(
            id=new_case_id(),
            kind=CaseKind.CRISIS,
            community=room.community,
            room=room.id,
            member=dict(event.sender),
            opened_at=now_us(),
            category=hit.category.value,
            seq=int(seq),
        )
        await raise_case(self.cases, self.notices, case)
        log.info("crisis case opened case=%s room=%s category=%s", case.id, room.id, hit.category.value)
        author = await self.communities.member(MemberId(event.sender["id"]))
        if author is not None:
            resources = await self.cases.resources(room.community, "en")
            payload = {"ev": "resources", "room": room.id, "reason": "crisis", "resources": resources}
            await self.notices.notify([author.account], payload)


async def raise_case(cases: CaseService, notices: Notices, case: Case) -> None:
    """Store the case, then alert the staff who should know of it, on every worker."""
    await cases.open(case)
    await notices.alert(case.community, RoomId(case.room), case.public())
