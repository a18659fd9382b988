"""A room's feed: broker events → seq order → encode once per codec → local outboxes.

One feed per room with local members, holding the room's one upstream subscription on
this worker, the last seq delivered and a short ring of recent events for resume.

What the broker carries for a room (`pack`): a list, the durable events one commit made
(in seq order), or a map, one ephemeral event (`presence`, `typing`) with the worker it
came from (which delivered it to its own members already) and the user who must not get
it back: `{"event", "origin", "skip"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgpack

from rooms.clock import parse_ts
from rooms.errors import BadRequest, Unavailable
from rooms.live import NO_MOVES, LiveRoom, Place, for_lobby, moves
from rooms.live import place as live_place
from rooms.model import ConnId, RoomId, Seq
from rooms.ports import Broker, TranscriptStore
from server.closecodes import CLOSE_REMOVED
from server.connection import Connection
from server.metrics import Metrics

log = logging.getLogger("hearth.fanout")

GoLive = Callable[[int, list[dict[str, Any]], bool, bool], None]  # latest, events, recovered, waiting
BACKFILL_SLACK = 64  # a ring backfill reads this many events further back, for the next resumes


def pack(payload: Mapping[str, Any] | list[dict[str, Any]]) -> bytes:
    """The broker's payload between workers (msgpack): a list of durable events, or an
    ephemeral event's envelope (see the module's docstring)."""
    data: bytes = msgpack.packb(payload, use_bin_type=True)
    return data


def envelope(event: Mapping[str, Any], *, origin: str, skip: str | None) -> dict[str, Any]:
    """An ephemeral event for the other workers: from `origin`, not to be shown to `skip`."""
    return {"event": dict(event), "origin": origin, "skip": skip}


class RoomFeed:
    """Delivers one room's events to this worker's members, in seq order, each once.

    A durable event whose seq is ahead of the next expected one is held back; if the
    missing ones do not arrive within `gap_wait` seconds they are read from the store.
    """

    def __init__(
        self,
        room: RoomId,
        broker: Broker,
        store: TranscriptStore,
        *,
        worker: str,
        metrics: Metrics,
        ring: int,
        resume_max: int,
        gap_wait: float,
    ) -> None:
        self.room = room
        self.worker = worker
        self.metrics = metrics
        self.broker = broker
        self.store = store
        self.resume_max = resume_max
        self.gap_wait = gap_wait
        self.last = Seq(0)
        self.ring: deque[dict[str, Any]] = deque(maxlen=ring)
        self.members: dict[ConnId, Connection] = {}
        self.waiting: dict[ConnId, Connection] = {}  # in a session's lobby: session events only
        self.live = LiveRoom()
        self._joining: dict[ConnId, list[dict[str, Any]]] = {}
        self.reserved = 0  # joins under way that have not attached yet: keep the feed alive
        self._held: dict[int, dict[str, Any]] = {}
        self._corking = False  # members' frames are being collected for one write each
        self._want = 0  # the store holds events up to this seq: deliver up to it
        self._gap_timer: asyncio.TimerHandle | None = None
        self._filler: asyncio.Task[None] | None = None
        self._backfill: asyncio.Task[bool] | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._advanced: asyncio.Future[None] | None = None
        self.on_admitted: Callable[[Connection, RoomId], None] | None = None

    @property
    def idle(self) -> bool:
        return not self.members and not self.waiting and not self._joining and not self.reserved

    # Lifecycle

    async def start(self) -> None:
        """Subscribe upstream; returns once the subscription is confirmed and `last` is known
        (or, with the broker down, once `last` is read from the store)."""
        self._task = asyncio.create_task(self._run(), name=f"feed {self.room}")
        try:
            await asyncio.shield(self._ready)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._gap_timer is not None:
            self._gap_timer.cancel()
        tasks = [t for t in (self._task, self._filler, self._backfill) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        """Listen upstream; on a broken subscription, subscribe again and fill from the store.

        When the broker is down at the start, the feed starts anyway (local events still come
        straight from this worker's commits) and keeps trying to subscribe.
        """
        delay = 0.1
        while True:
            try:
                async with self.broker.subscribe(self.room) as messages:
                    await self._sync()
                    delay = 0.1
                    async for raw in messages:
                        payload = msgpack.unpackb(raw, raw=False)
                        if isinstance(payload, list):
                            self.accept_all(payload)
                        elif "event" in payload:
                            if payload.get("origin") != self.worker:  # (ours were delivered here already)
                                self.ephemeral(payload["event"], skip=payload.get("skip"))
                        else:  # a worker of the version before, during a rolling deploy
                            skip = payload.pop("_skip", None)
                            if payload.pop("_origin", None) != self.worker:
                                self.ephemeral(payload, skip=skip)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._ready.done():
                    if not isinstance(exc, Unavailable) or not await self._start_degraded():
                        self._ready.set_exception(exc)
                        return
                log.warning("feed room=%s has no subscription (%s); retrying", self.room, type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _start_degraded(self) -> bool:
        try:
            await self._sync()
        except Unavailable:
            return False
        return True

    async def _sync(self) -> None:
        """Read where the store stands; the first time, also fold the live session so far."""
        latest = await self.store.last_seq(self.room)
        if not self._ready.done():
            for event in await self.store.read_session(self.room, latest):
                self.live.apply(event.to_wire())
        self.expect(latest)

    def expect(self, latest: int) -> None:
        """The store holds events up to `latest`: the first call sets where this feed starts;
        later ones (resubscribed, or a periodic check) fill whatever this feed missed."""
        if not self._ready.done():
            self.last = Seq(latest)
            self._ready.set_result(None)
        elif latest > self._want:
            self._want = latest
            self._flush()

    # Delivery

    def accept_all(self, events: list[dict[str, Any]]) -> None:
        """Several durable events at once (a commit's, or one broker message's): each member
        gets them in one write."""
        with self._corked(len(events) > 1):
            for event in events:
                self.accept(event)

    @contextlib.contextmanager
    def _corked(self, several: bool) -> Iterator[None]:
        """With `several` events to deliver, collect each connection's frames and write them
        once at the end: a write to a socket costs far more than the bytes it carries."""
        if not several or self._corking:
            yield
            return
        conns = [*self.members.values(), *self.waiting.values()]
        self._corking = True
        for conn in conns:
            conn.cork()
        try:
            yield
        finally:
            self._corking = False
            for conn in conns:
                conn.uncork()

    def accept(self, event: dict[str, Any]) -> None:
        """A durable event, from the broker or straight from this worker's commit: delivered
        in seq order, once (ours come back through the broker too, and their seq drops them)."""
        seq = event["seq"]
        if seq <= self.last:
            return  # already delivered (a repeat or a late duplicate)
        self._held[seq] = event
        self._flush()

    def _flush(self) -> None:
        """Deliver what is next in line; while something is missing, keep a fill scheduled.

        Events held past a gap wait `gap_wait` for the missing ones to arrive; events known
        only from the store are read at once.
        """
        self._release_held()
        behind = bool(self._held) or self._want > self.last
        if not behind:
            if self._gap_timer is not None:
                self._gap_timer.cancel()
                self._gap_timer = None
        elif self._gap_timer is None and (self._filler is None or self._filler.done()):
            delay = self.gap_wait if self._held else 0.0
            self._gap_timer = asyncio.get_running_loop().call_later(delay, self._gap_expired)

    def _release_held(self) -> None:
        """Deliver the held events that are next in line, several in one write per socket."""
        with self._corked(self.last + 2 in self._held):
            while (event := self._held.pop(self.last + 1, None)) is not None:
                self._deliver(event)

    def _gap_expired(self) -> None:
        self._gap_timer = None
        self._filler = asyncio.create_task(self._fill(), name=f"gap fill {self.room}")

    async def _fill(self) -> None:
        failed = False
        try:
            while True:
                found = await self.store.read_since(self.room, self.last, 500)
                if found:
                    log.info("gap fill room=%s after=%s events=%d", self.room, self.last, len(found))
                    self.metrics.gap_fills.inc(len(found))
                for stored in found:
                    self._held.setdefault(stored.seq, stored.to_wire())
                self._release_held()
                if len(found) < 500:
                    break
        except Exception as exc:
            log.warning("gap fill room=%s failed (%s); retrying", self.room, type(exc).__name__)
            failed = True
        finally:
            self._filler = None
            self._held = {s: e for s, e in self._held.items() if s > self.last}
        if failed:
            self._gap_timer = asyncio.get_running_loop().call_later(self.gap_wait, self._gap_expired)
        else:
            self._flush()

    def _deliver(self, event: dict[str, Any]) -> None:
        self.last = event["seq"]
        if self._advanced is not None and not self._advanced.done():
            self._advanced.set_result(None)
        self.ring.append(event)
        if event["ev"] in ("edit", "delete"):
            self._amend(event)
        for pending in self._joining.values():
            pending.append(event)
        self.metrics.fanout.observe(max(0.0, time.time() - parse_ts(event["ts"]) / 1000))
        if "to" in event:
            self._push(event, [c for c in self.members.values() if c.sees(self.room, event)])
        else:
            self._push(event, self.members.values())
        if self.waiting:  # the lobby sees some session events, a few trimmed for each member
            unchanged: list[Connection] = []
            for conn in list(self.waiting.values()):
                seen = for_lobby(event, conn.who(self.room))
                if seen is event:
                    unchanged.append(conn)
                elif seen is not None:
                    conn.send(seen)
            self._push(event, unchanged)  # encoded once per encoding, as for members
        if event["ev"] == "session":
            self._session_changed(event)

    def _session_changed(self, event: dict[str, Any]) -> None:
        """Fold the event, then move the connections it concerns (`rooms.live.moves`): let
        the admitted in from the lobby, and close the sockets of whoever was put out (4403)."""
        self.live.apply(event)
        moved = moves(event)
        if moved is NO_MOVES:
            return
        for conn in list(self.waiting.values()):
            if moved.admits(conn.who(self.room)):
                del self.waiting[conn.id]
                self.members[conn.id] = conn
                if self.on_admitted is not None:
                    self.on_admitted(conn, self.room)
        if moved.out is not None:
            for conn in [*self.members.values(), *self.waiting.values()]:
                if conn.who(self.room) == moved.out:
                    conn.close_soon(CLOSE_REMOVED, "removed from the session")

    def tick(self, event: Mapping[str, Any]) -> None:
        """A clock event of this worker's own (a share's countdown), to its members only."""
        self._push(event, self.members.values())

    def ephemeral(self, event: Mapping[str, Any], *, skip: str | None) -> None:
        """An ephemeral event (presence, typing) to the members, but `skip`'s connections; the
        lobby does not see the room."""
        conns = [c for c in self.members.values() if c.who(self.room) != skip]
        self._push(event, conns, momentary=event["ev"] == "typing")

    def _push(self, event: Mapping[str, Any], conns: Any, *, momentary: bool = False) -> None:
        frames: dict[str, bytes] = {}
        count = 0
        for conn in conns:
            frame = frames.get(conn.codec.name)
            if frame is None:
                frame = frames[conn.codec.name] = conn.codec.frame(event)
            count += conn.push(frame, momentary=momentary)
        self.metrics.frames_out.inc(count)

    def _amend(self, change: dict[str, Any]) -> None:
        """Keep the ring's copy of a message as it now stands, as the store does."""
        target, deleted = change["target"], change["ev"] == "delete"
        for i, kept in enumerate(self.ring):
            if kept["seq"] == target and kept["ev"] == "message":
                if deleted:
                    gone = ("text", "edited", "edit_seq")
                    marks = {"deleted": True, **({"redacted": True} if change.get("redacted") else {})}
                    self.ring[i] = {k: v for k, v in kept.items() if k not in gone} | marks
                else:
                    self.ring[i] = kept | {"text": change["text"], "edited": True, "edit_seq": change["seq"]}
            elif deleted and kept["ev"] == "edit" and kept.get("target") == target:
                self.ring[i] = {k: v for k, v in kept.items() if k != "text"} | {"deleted": True}

    # Joining

    async def attach(self, conn: Connection, since: int | None, go_live: GoLive, *, waiting: bool = False) -> None:
        """Make `conn` a member; with `since`, hand it every durable event after it.

        Live events start being collected before the store is read and are merged by seq,
        so nothing committed meanwhile is missed or repeated. `go_live(latest, events,
        recovered, waiting)` is called at the moment `conn` becomes a member (`waiting`: in the
        lobby, as placed by then), before any live event is pushed to it. Nothing happens if
        the connection closed meanwhile.
        """
        was = self.members.pop(conn.id, None) or self.waiting.pop(conn.id, None)  # joining again
        place = self.waiting if waiting else self.members
        try:
            await self._attach(conn, since, go_live, place)
        except BaseException:
            if was is not None and not conn.closing:
                place[conn.id] = was  # a failed re-join leaves the connection as it was
            raise

    async def _attach(
        self, conn: Connection, since: int | None, go_live: GoLive, place: dict[ConnId, Connection]
    ) -> None:
        if since is None:
            self._go_live(conn, go_live, self.last, [], True, place)
            return
        if since > self.last:
            latest = await self.store.last_seq(self.room)
            if since > latest:
                raise BadRequest("since is ahead of this room's latest seq.")
            self.expect(latest)  # committed but not delivered here yet: fetch it now
            if not await self.reach(since):
                raise Unavailable("This room is catching up. Please retry in a moment.")
        resumable = self.last - since <= self.resume_max
        if resumable and self._first() > since + 1:
            await self._extend_ring(since)
        if resumable and self._first() <= since + 1:
            self._go_live(conn, go_live, self.last, [e for e in self.ring if e["seq"] > since], True, place)
            return
        live: list[dict[str, Any]] = []
        self._joining[conn.id] = live
        try:
            stored = await self.store.read_since(self.room, Seq(since), self.resume_max + 1)
            recovered = len(stored) <= self.resume_max
            if not recovered:
                stored = await self.store.read_before(self.room, None, self.resume_max)
        finally:
            self._joining.pop(conn.id, None)
        merged = {e.seq: e.to_wire() for e in stored}
        for event in live:
            merged.setdefault(event["seq"], event)
        # Events past `last` are still on their way to this feed and will arrive live.
        events = [merged[s] for s in sorted(merged) if since < s <= self.last]
        self._go_live(conn, go_live, self.last, events, recovered, place)

    def _first(self) -> int:
        """The oldest seq the ring holds (`last + 1` when it holds none)."""
        return int(self.ring[0]["seq"]) if self.ring else self.last + 1

    async def _extend_ring(self, since: int) -> None:
        """Read the events after `since` that the ring lacks into it, once for every join that
        needs them: after a restart, or once a worker's last member of the room has left, a
        storm of resumes costs one store read, not one each."""
        while self._first() > since + 1:
            if self._backfill is None:
                self._backfill = asyncio.create_task(self._read_back(since), name=f"backfill {self.room}")
                self._backfill.add_done_callback(self._backfilled)
            if not await asyncio.shield(self._backfill):
                return  # no room left, or the store did not join up with the ring: read per join

    def _backfilled(self, task: asyncio.Task[bool]) -> None:
        if self._backfill is task:
            self._backfill = None

    async def _read_back(self, since: int) -> bool:
        space = (self.ring.maxlen or 0) - len(self.ring)
        if space <= 0:
            return False
        start = max(0, since - BACKFILL_SLACK, self._first() - 1 - space)
        last = self.last
        stored = await self.store.read_since(self.room, Seq(start), self._first() - 1 - start)
        first = self._first()  # events may have arrived meanwhile (and, in a full ring, left)
        older = [e for e in stored if e.seq < first]
        space = (self.ring.maxlen or 0) - len(self.ring)
        if not older or older[-1].seq != first - 1 or older[-1].seq - older[0].seq != len(older) - 1 or space <= 0:
            return False
        for event in reversed(older[-space:]):
            self.ring.appendleft(event.to_wire())
        # An edit or a delete delivered during the read may have committed after it: apply
        # again, in order, what arrived since the read began (applying one twice is harmless).
        for change in [e for e in self.ring if e["seq"] > last and e["ev"] in ("edit", "delete")]:
            self._amend(change)
        return True

    def _go_live(
        self,
        conn: Connection,
        go_live: GoLive,
        latest: int,
        events: list[dict[str, Any]],
        recovered: bool,
        place: dict[ConnId, Connection],
    ) -> None:
        if not conn.closing:
            where = live_place(self.live, conn.who(self.room), lobby=place is self.waiting)
            if where is Place.OUT:
                conn.close_soon(CLOSE_REMOVED, "removed from the session")
                return
            if where is Place.ROOM and place is self.waiting:  # let in while the join read the store
                place = self.members
                if self.on_admitted is not None:
                    self.on_admitted(conn, self.room)
            if place is self.waiting:
                shown = [dict(seen) for e in events if (seen := for_lobby(e, conn.who(self.room))) is not None]
            else:
                shown = [e for e in events if conn.sees(self.room, e)]
            go_live(latest, shown, recovered, place is self.waiting)
            place[conn.id] = conn

    async def reach(self, seq: int) -> bool:
        """Wait (briefly) until this feed has delivered `seq`; False if it has not."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.gap_wait * 4):
                while self.last < seq:
                    if self._advanced is None or self._advanced.done():
                        self._advanced = asyncio.get_running_loop().create_future()
                    await asyncio.shield(self._advanced)
        return self.last >= seq

    def detach(self, conn: Connection) -> None:
        self.members.pop(conn.id, None)
        self.waiting.pop(conn.id, None)
        self._joining.pop(conn.id, None)
