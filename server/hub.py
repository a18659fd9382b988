"""Hub: what a worker is made of, built and wired once by the app's lifespan.

Each part is given what it needs when it is built, and none reaches through the hub for
anything; the edges (websocket commands in server.dispatch, HTTP handlers) reach the parts
through it. The parts, and what each one is for:

    health     whether the backends answer; carrying on without shared state
    quotas     per-user limits across workers: sockets, durable events, sign-in buckets
    clients    this worker's signed-in connections and their users' byte budgets
    fanout     the room feeds, and events to the other workers and to this one's members
    committer  group commit: durable events stored, acknowledged, handed to the fanout
    roster     presence per room, on every worker, and the events that tell it
    desk       live sessions: one change at a time per room, the lobby, the clocks
    joins      a connection entering and leaving rooms
    notices    what every worker acts on at once (reminders, role changes, sign-outs, bans)
    members    communities and who someone is in each (rooms.communities)
    cases      the safety queue (rooms.safety.cases)
    safety     the crisis detector, reading what was committed here, off the path of delivery
    heartbeat  keeping leases, feeds and revocations right, every quarter lease
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Protocol

from rooms.communities import CommunityService
from rooms.ports import AuditLog, Communities, Directory, Outbox, Revocations, SafetyStore, TranscriptStore
from rooms.safety import load_detector
from rooms.safety.cases import CaseService
from rooms.service import RoomService
from server.auth import Accounts
from server.broker import Backend, Shared
from server.clients import Clients
from server.closecodes import CLOSE_RESTARTING
from server.codec import make_codecs
from server.committer import GroupCommitter
from server.fanout import Fanout
from server.health import Health
from server.heartbeat import Heartbeat
from server.joins import Joins
from server.live import LiveDesk
from server.metrics import Metrics
from server.notices import Notices
from server.quotas import Quotas
from server.roster import Roster
from server.safety import SafetyWatch
from server.settings import Settings

log = logging.getLogger("hearth.hub")


class Records(Directory, Revocations, Protocol):
    """Users, rooms, memberships and revoked tokens (implementation: SqlDirectory)."""


class Hub:
    def __init__(
        self,
        settings: Settings,
        *,
        store: TranscriptStore,
        directory: Records,
        broker: Backend,
        shared: Shared,
        accounts: Accounts,
        outbox: Outbox,
        communities: Communities,
        audit: AuditLog,
        safety: SafetyStore,
    ) -> None:
        self.settings = settings
        self.limits = limits = settings.limits
        self.store = store
        self.directory = directory
        self.accounts = accounts
        self.outbox = outbox  # where reminders for e-mail and SMS go
        self.shared = shared
        self.worker = worker = secrets.token_hex(8)
        self.codecs = make_codecs(max_depth=limits.max_depth)
        self.metrics = metrics = Metrics()
        self.service = RoomService(directory, store, communities, max_text=limits.max_text)
        self.communities = communities
        self.audit = audit
        self.members = CommunityService(communities, audit)
        self.cases = CaseService(safety, audit, self.members)

        self.health = health = Health(broker)
        self.quotas = quotas = Quotas(shared.limiter, health, limits)
        self.clients = clients = Clients(quotas, limits, metrics, self.clock)
        self.fanout = fanout = Fanout(broker, store, health, metrics, settings, worker=worker)
        self.committer = committer = GroupCommitter(store, fanout, max_batch=settings.commit_batch, metrics=metrics)
        self.roster = roster = Roster(shared.presence, health, fanout, self.clock)
        self.desk = desk = LiveDesk(committer, store, shared.locks, roster, fanout, quotas)
        fanout.on_feed = desk.watch
        self.joins = Joins(fanout, roster, desk, limits, metrics)
        self.notices = Notices(
            broker,
            fanout,
            health,
            clients,
            standing=self.service.standing_in,
            forget_role=directory.forget_role,
            forget_room=directory.forget_room,
            communities=communities,
            worker=worker,
        )
        self.safety = SafetyWatch(load_detector("en"), self.cases, directory, communities, self.notices)
        committer.on_committed = self.safety.committed
        self.heartbeat = Heartbeat(
            settings.presence_ttl / 4,
            store=store,
            directory=directory,
            limiter=shared.limiter,
            health=health,
            fanout=fanout,
            roster=roster,
            clients=clients,
            desk=desk,
            communities=communities,
        )

    @staticmethod
    def clock() -> float:
        return time.monotonic()

    @property
    def draining(self) -> bool:
        return self.clients.draining

    def start(self) -> None:
        self.metrics.watch_gc()
        self.committer.start()
        self.desk.start()
        self.heartbeat.start()
        self.notices.start()
        self.safety.start()

    async def drain(self) -> None:
        """Stop taking commands, commit and acknowledge what is pending, close with 1012.

        Acknowledgements are pushed by the commit futures' callbacks, which run before
        `flush()` returns, so every ack is queued ahead of the close frame.
        """
        self.clients.draining = True
        try:
            async with asyncio.timeout(self.settings.drain_timeout):
                await self.committer.flush()
                await self.clients.close_all(CLOSE_RESTARTING, "restarting: reconnect and resume")
        except TimeoutError:
            log.warning("drain timed out with %d connections open", len(self.clients.registry))

    async def close(self) -> None:
        self.metrics.unwatch_gc()
        await self.desk.close()
        await self.heartbeat.close()
        await self.notices.close()
        await self.committer.close()
        await self.safety.close()
        await self.fanout.close()
