"""Fanout: this worker's room feeds, and the two ways an event reaches members.

A committed event goes to the other workers through the broker (one message per room and
commit) and to this worker's members straight from the commit (`deliver`), in that order,
so the other workers start sooner. An ephemeral event (presence, typing) goes out the same
two ways, wrapped with where it came from and whom it must skip (`server.feed.envelope`).
Every worker puts what it receives in seq order per room (`server.feed.RoomFeed`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rooms.errors import Unavailable
from rooms.model import Event, RoomId
from rooms.ports import TranscriptStore
from server.broker import Backend
from server.feed import RoomFeed, envelope, pack
from server.health import Health
from server.metrics import Metrics
from server.settings import Settings

log = logging.getLogger("hearth.fanout")

Outgoing = tuple[RoomId, bytes]  # a message for the broker: its channel (a room) and its packed bytes
Batches = dict[RoomId, list[dict[str, Any]]]  # committed events as clients see them, per room, in seq order


class Fanout:
    def __init__(
        self,
        broker: Backend,
        store: TranscriptStore,
        health: Health,
        metrics: Metrics,
        settings: Settings,
        *,
        worker: str,
    ) -> None:
        self.broker = broker
        self.store = store
        self.health = health
        self.metrics = metrics
        self.settings = settings
        self.worker = worker
        self.feeds: dict[RoomId, RoomFeed] = {}
        self.on_feed: Callable[[RoomFeed], None] | None = None  # told of every feed started (live sessions)
        self._locks: dict[RoomId, asyncio.Lock] = {}

    # Feeds

    async def open(self, room: RoomId) -> RoomFeed:
        """The room's feed, started (subscribed upstream) if this worker had none; reserved
        for the caller until it calls `release`."""
        lock = self._locks.setdefault(room, asyncio.Lock())
        async with lock:
            feed = self.feeds.get(room)
            if feed is None:
                limits = self.settings.limits
                feed = RoomFeed(
                    room,
                    self.broker,
                    self.store,
                    worker=self.worker,
                    metrics=self.metrics,
                    ring=limits.ring,
                    resume_max=limits.resume_max,
                    gap_wait=self.settings.gap_wait,
                )
                if self.on_feed is not None:
                    self.on_feed(feed)
                await feed.start()
                self.feeds[room] = feed
            feed.reserved += 1
            return feed

    async def release(self, feed: RoomFeed) -> None:
        """Stop a feed nobody on this worker listens to any more (unsubscribes upstream)."""
        if feed.idle and self.feeds.get(feed.room) is feed:
            del self.feeds[feed.room]
            self._locks.pop(feed.room, None)
            await feed.stop()

    def catch_up(self, latest: Mapping[RoomId, int]) -> None:
        """The store holds each room's events up to `latest[room]`: feeds behind fill from it."""
        for room, seq in latest.items():
            if (feed := self.feeds.get(room)) is not None:
                feed.expect(seq)

    async def close(self) -> None:
        for feed in list(self.feeds.values()):
            await feed.stop()
        self.feeds.clear()

    # Committed events (server.committer)

    @staticmethod
    def batches(events: Sequence[Event]) -> Batches:
        by_room: Batches = {}
        for event in events:
            by_room.setdefault(event.room, []).append(event.to_wire())
        return by_room

    def outgoing(self, batches: Batches) -> list[Outgoing]:
        """What the other workers are sent of `batches` (nothing with a broker inside this process)."""
        if not self.broker.reaches_other_workers:
            return []
        return [(room, pack(batch)) for room, batch in batches.items()]

    def deliver(self, batches: Batches) -> None:
        """To this worker's members. Never raises: the events are durable already, and the
        other workers and resumes here get them whatever happens."""
        for room, batch in batches.items():
            if (feed := self.feeds.get(room)) is not None:
                try:
                    feed.accept_all(batch)  # (packed for the broker already: the feed's now)
                except Exception:
                    log.exception("local delivery failed room=%s", room)

    async def publish(self, messages: Sequence[Outgoing]) -> None:
        """To the other workers; while the broker is away, they get durable events from the
        store (gap fill) instead, and ephemeral ones not at all."""
        if not messages or not self.broker.reaches_other_workers:
            return
        try:
            await self.broker.publish(messages)
        except Unavailable:
            self.health.note("broker")

    # Ephemeral events

    async def ephemeral(self, room: RoomId, event: Mapping[str, Any], *, skip: str | None = None) -> None:
        """`event` to the room's members on every worker but `skip`'s connections."""
        feed = self.feeds.get(room)
        if feed is not None:
            feed.ephemeral(event, skip=skip)
        await self.publish([(room, pack(envelope(event, origin=self.worker, skip=skip)))])
