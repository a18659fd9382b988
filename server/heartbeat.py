"""The heartbeat: every quarter of a presence lease, what keeps a worker's view right.

- From the store, needed most while Redis is away: each room feed catches up with what is
  committed (so a lost publish is late by one beat at most), and sockets whose token was
  revoked, or whose account was banned from a community they are in, on another worker are
  closed (if that worker's notice was lost).
- On shared state: this worker's presence leases and connection counts are renewed, and
  its rooms swept for users of workers that died, whose departure is told and noted in
  any live session.
"""

from __future__ import annotations

import asyncio
import logging

from rooms.errors import Unavailable
from rooms.model import UserId
from rooms.ports import Communities, Limiter, Revocations, TranscriptStore
from server.clients import Clients
from server.fanout import Fanout
from server.health import Health
from server.live import LiveDesk
from server.roster import Roster

log = logging.getLogger("hearth.hub")


class Heartbeat:
    def __init__(
        self,
        every: float,
        *,
        store: TranscriptStore,
        directory: Revocations,
        limiter: Limiter,
        health: Health,
        fanout: Fanout,
        roster: Roster,
        clients: Clients,
        desk: LiveDesk,
        communities: Communities,
    ) -> None:
        self.every = every
        self.store = store
        self.directory = directory
        self.limiter = limiter
        self.health = health
        self.fanout = fanout
        self.roster = roster
        self.clients = clients
        self.desk = desk
        self.communities = communities
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="heartbeat")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.from_store()
            except Unavailable:
                pass  # the store is down: its own errors say so
            except Exception:
                log.exception("store check in the heartbeat failed")
            try:
                await self.on_shared_state()
                self.health.back()
            except Unavailable:
                self.health.note("shared state")
            except Exception:
                log.exception("presence heartbeat failed")

    async def from_store(self) -> None:
        self.fanout.catch_up(await self.store.last_seqs(list(self.fanout.feeds)))
        revoked = await self.directory.load_revoked()
        for jti in {c.token_id for c in self.clients.registry.all()} & revoked:
            self.clients.revoke(jti)
        bans = await self.communities.load_bans()
        present = {(m.community, c.user_id) for c in self.clients.registry.all() for m in c.members.values()}
        for community, user in present & bans:
            self.clients.banned(community, UserId(user))

    async def on_shared_state(self) -> None:
        await self.roster.renew()
        await self.limiter.refresh_conns([(c.user.id, c.id) for c in self.clients.registry.all() if c.user])
        for room, card in await self.roster.sweep(list(self.fanout.feeds)):
            if (feed := self.fanout.feeds.get(room)) is not None:  # their worker died: its bookkeeping
                await self.desk.gone(feed, card["id"])
