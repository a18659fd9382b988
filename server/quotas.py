"""Quotas: what each user may have at once and do per second, across every worker.

Open sockets (`limits.user_connections`) and durable events (`limits.user_rate`, `_burst`)
are counted in shared state, so a user's devices on different workers share one count.
While shared state is away, each worker counts on its own: N workers then allow N times as
much, which is better than no limit at all (docs/security.md).
"""

from __future__ import annotations

from rooms.errors import RateLimited
from rooms.model import User, UserId
from rooms.ports import Limiter
from server.broker.memory import MemoryLimiter
from server.health import Health
from server.settings import Limits


class Quotas:
    def __init__(self, limiter: Limiter, health: Health, limits: Limits) -> None:
        self.limiter = limiter
        self.health = health
        self.limits = limits
        self.fallback = MemoryLimiter()  # this worker's own buckets, while the shared ones are away

    async def take(self, key: str, rate: float, burst: float) -> float:
        """A token from the shared bucket `key`, or this worker's own while shared state is
        away: 0, or the seconds until one will be there."""
        wait = await self.health.shared(self.limiter.take(key, rate, burst))
        return await self.fallback.take(key, rate, burst) if wait is None else wait

    async def events(self, user: User) -> None:
        """One durable event of `user`'s (a send, an edit, a session change): RateLimited past
        their rate, all their devices together."""
        wait = await self.take(f"{user.id}:events", self.limits.user_rate, self.limits.user_burst)
        if wait:
            raise RateLimited("You are sending too fast. Slow down.", retry_after=wait)

    async def open(self, user: UserId, conn: str, *, here: int) -> None:
        """A socket of `user` signs in: RateLimited when they hold `user_connections` already
        (`here` of them on this worker, which is all that is counted while shared state is away)."""
        limit = self.limits.user_connections
        allowed = await self.health.shared(self.limiter.open_conn(user, conn, limit))
        if allowed is None:
            allowed = here < limit
        if not allowed:
            raise RateLimited("Too many open connections for this account. Close one and retry.", retry_after=5.0)

    async def close(self, user: UserId, conn: str) -> None:
        await self.health.shared(self.limiter.close_conn(user, conn))
