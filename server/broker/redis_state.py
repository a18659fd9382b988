"""Presence, limits and locks on Redis: each atomic step is a Lua script in lua/.

Every key of a room carries the room id as a hash tag (`{r_…}`), so a room's keys stay in one
slot when rooms are spread over a Redis Cluster. Every call goes through the worker's
`RedisCommands`: the calls of many connections at once (a burst of closes, a reconnect
storm, a heartbeat) share pipelines, and fail as `Unavailable` saying why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
from redis.commands.core import AsyncScript

from presence.ports import PresenceLease, PresenceStore
from rooms.clock import now_ms
from rooms.model import UserId
from rooms.ports import Lease, Limiter, Locks
from server.broker.redis_commands import Command, RedisCommands, command, script

LUA = Path(__file__).with_name("lua")


class Scripts:
    """The Lua scripts, registered once per client (EVALSHA, loaded on first use)."""

    def __init__(self, commands: RedisCommands) -> None:
        self._scripts = {path.stem: commands.register_script(path.read_text()) for path in LUA.glob("*.lua")}

    def __getitem__(self, name: str) -> AsyncScript:
        return self._scripts[name]


class RedisPresence:
    """Presence leases in Redis. Per room: a ZSET user → latest lease expiry and a HASH of
    cards; per user in a room: a ZSET conn → lease expiry. Expired leases are ignored when
    read (lazy expiry) and removed by `sweep`."""

    def __init__(self, commands: RedisCommands, scripts: Scripts, *, prefix: str, ttl: float) -> None:
        self.commands = commands
        self.scripts = scripts
        self.prefix = prefix
        self.ttl_ms = int(ttl * 1000)

    def _keys(self, room: str) -> tuple[str, str, str]:
        base = f"{self.prefix}presence:{{{room}}}"
        return f"{base}:users", f"{base}:cards", f"{base}:conns:"

    def _add(self, room: str, leases: Sequence[PresenceLease], now: int) -> Command:
        """`presence_add` for leases in one room."""
        users, cards, conns = self._keys(room)
        args: list[str | bytes | int] = [now, now + self.ttl_ms, conns]
        for _, user_id, conn_id, card in leases:
            args += (user_id, conn_id, orjson.dumps(dict(card)))
        return script(self.scripts["presence_add"], [users, cards], args)

    async def add(self, room: str, user_id: str, conn_id: str, card: Mapping[str, str]) -> bool:
        [lapsed] = await self.commands.run(self._add(room, [(room, user_id, conn_id, card)], now_ms()))
        return bool(lapsed)

    async def renew(self, leases: Sequence[PresenceLease]) -> list[bool]:
        """One `presence_add` per room for all of its leases: a script call per lease cost the
        worker about 20 µs of CPU each."""
        now = now_ms()
        by_room: dict[str, list[int]] = {}
        for i, lease in enumerate(leases):
            by_room.setdefault(lease[0], []).append(i)
        calls = [self._add(room, [leases[i] for i in places], now) for room, places in by_room.items()]
        lapsed = [False] * len(leases)
        for places, flags in zip(by_room.values(), await self.commands.run_all(calls), strict=True):
            for i, flag in zip(places, flags, strict=True):
                lapsed[i] = bool(flag)
        return lapsed

    async def remove(self, room: str, user_id: str, conn_id: str) -> bool:
        users, cards, conns = self._keys(room)
        keys = [users, cards, conns + user_id]
        return bool(
            await self.commands.run(script(self.scripts["presence_remove"], keys, [user_id, conn_id, now_ms()]))
        )

    async def members(self, room: str) -> list[dict[str, str]]:
        users, cards, _ = self._keys(room)
        found = await self.commands.run(script(self.scripts["presence_members"], [users, cards], [now_ms()]))
        return [orjson.loads(card) for card in found]

    async def sweep(self, room: str) -> list[Mapping[str, str]]:
        users, cards, conns = self._keys(room)
        gone = await self.commands.run(script(self.scripts["presence_sweep"], [users, cards], [now_ms(), conns]))
        return [orjson.loads(card) for card in gone]


class RedisLimiter:
    """Per-user token buckets and connection counts shared by every worker."""

    def __init__(self, commands: RedisCommands, scripts: Scripts, *, prefix: str, ttl: float) -> None:
        self.commands = commands
        self.scripts = scripts
        self.prefix = prefix
        self.ttl_ms = int(ttl * 1000)
        self._leased: dict[str, int] = {}  # tokens this worker took from a bucket and has not spent
        self._fetching: dict[str, asyncio.Future[float]] = {}  # a take from Redis under way, per key

    async def take(self, key: str, rate: float, burst: float) -> float:
        """One token from the bucket in Redis. A worker takes up to a quarter of a second's
        worth at once (a quarter of the burst, if that is smaller) and spends the rest
        locally, so a busy sender costs one round trip per few events. Taken tokens never go
        back: all workers together stay within the rate. One fetch per key at a time: calls
        that come meanwhile wait for it and share what it took (each of 16 sign-ins at once
        used to fetch a quarter of the burst for itself, and the bucket ran dry at the 5th)."""
        while (fetching := self._fetching.get(key)) is not None:
            wait = await asyncio.shield(fetching)
            if wait:
                return wait  # the bucket was empty a moment ago: so it is for this call
        left = self._leased.pop(key, 0)
        if left >= 1:
            if left >= 2:
                self._leased[key] = left - 1
            return 0.0
        fetching = self._fetching[key] = asyncio.get_running_loop().create_future()
        wait = 0.0
        try:
            want = max(1, int(min(rate, burst) / 4))
            bucket = [f"{self.prefix}rate:{key}"]
            taken, waited = await self.commands.run(
                script(self.scripts["token_bucket"], bucket, [rate, burst, now_ms(), want])
            )
            if not taken:
                wait = int(waited) / 1000
            elif taken > 1:
                if len(self._leased) > 100_000:
                    self._leased.clear()  # dropping tokens only ever limits more
                self._leased[key] = int(taken) - 1
        finally:
            del self._fetching[key]
            fetching.set_result(wait)  # on a failure, 0: the others try for themselves
        return wait

    async def open_conn(self, user: UserId, conn: str, limit: int) -> bool:
        now = now_ms()
        args = [conn, now, now + self.ttl_ms, limit]
        return bool(await self.commands.run(script(self.scripts["conn_open"], [f"{self.prefix}conns:{user}"], args)))

    async def close_conn(self, user: UserId, conn: str) -> None:
        await self.commands.run(command("ZREM", f"{self.prefix}conns:{user}", conn))

    async def refresh_conns(self, conns: Sequence[tuple[UserId, str]]) -> None:
        expiry = now_ms() + self.ttl_ms
        by_user: dict[UserId, list[str | int]] = {}
        for user, conn in conns:
            by_user.setdefault(user, []).extend((expiry, conn))
        # one command per user, not per connection
        await self.commands.run_all(
            [command("ZADD", f"{self.prefix}conns:{u}", *leases) for u, leases in by_user.items()]
        )


class RedisLocks:
    """`SET NX PX` locks with a fencing token from a counter that only grows."""

    def __init__(self, commands: RedisCommands, scripts: Scripts, *, prefix: str) -> None:
        self.commands = commands
        self.scripts = scripts
        self.prefix = prefix

    def _keys(self, name: str) -> list[str]:
        return [f"{self.prefix}lock:{{{name}}}", f"{self.prefix}lock:{{{name}}}:fence"]

    async def acquire(self, name: str, ttl: float) -> Lease | None:
        token = await self.commands.run(script(self.scripts["lock_acquire"], self._keys(name), [int(ttl * 1000)]))
        return None if token is None else Lease(name, int(token))

    async def renew(self, lease: Lease, ttl: float) -> bool:
        keys = self._keys(lease.name)[:1]
        return bool(await self.commands.run(script(self.scripts["lock_renew"], keys, [lease.token, int(ttl * 1000)])))

    async def release(self, lease: Lease) -> None:
        await self.commands.run(script(self.scripts["lock_release"], self._keys(lease.name)[:1], [lease.token]))


_presence: type[PresenceStore] = RedisPresence
_limiter: type[Limiter] = RedisLimiter
_locks: type[Locks] = RedisLocks
