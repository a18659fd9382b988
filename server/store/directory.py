"""SqlDirectory: users, rooms, membership and revoked tokens."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import orjson
from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from rooms.clock import now_us
from rooms.errors import Conflict
from rooms.fields import is_id
from rooms.model import CommunityId, MemberRole, Role, Room, RoomId, RoomKind, User, UserId
from rooms.ports import Directory, Revocations
from server.store.engine import Engines
from server.store.sql import guarded
from server.store.tables import bans, members, revoked_tokens, room_members, rooms, users

T = TypeVar("T")


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def _user(row: Any) -> User:
    return User(UserId(row.id), row.username, row.display_name, Role(row.role))


def _room(row: Any) -> Room:
    hours = orjson.loads(row.open_hours) if row.open_hours else None
    community = CommunityId(row.community_id)
    return Room(RoomId(row.id), row.name, RoomKind(row.kind), community, hours, row.slow_mode, row.suspended_notice)


class Recent:
    """What was looked up lately: users, rooms and memberships are read on every connect and
    join, and change rarely. What was found is remembered for `ttl` seconds, what was not
    for `absent_ttl` (a user added to a room is not kept out for long). Lookups of one key
    at the same moment share one read (a reconnect storm reads a room once, not once per
    client). A change made on this worker drops its entry at once, and the result of a read
    that was under way then is not kept; other workers see a change within those times."""

    def __init__(self, ttl: float = 30.0, absent_ttl: float = 2.0, size: int = 50_000) -> None:
        self.ttl = ttl
        self.absent_ttl = absent_ttl
        self.size = size
        self._known: dict[Any, tuple[float, Any]] = {}  # oldest first
        self._loading: dict[Any, asyncio.Task[Any]] = {}

    async def get(self, key: Any, load: Callable[[], Awaitable[T | None]]) -> T | None:
        """The remembered value of `key`, or what `load()` finds now (None: there is none)."""
        known = self._known.get(key)
        if known is not None and known[0] >= time.monotonic():
            return known[1]  # type: ignore[no-any-return]
        loading = self._loading.get(key)
        if loading is None:
            loading = self._loading[key] = asyncio.ensure_future(load())
            loading.add_done_callback(partial(self._loaded, key))
        return await asyncio.shield(loading)

    def _loaded(self, key: Any, loading: asyncio.Task[Any]) -> None:
        if self._loading.get(key) is not loading:
            return  # dropped while it was read: what it found may be out of date
        del self._loading[key]
        if loading.cancelled() or loading.exception() is not None:
            return
        value = loading.result()
        self._known.pop(key, None)
        if len(self._known) >= self.size:
            self._evict()
        self._known[key] = (time.monotonic() + (self.ttl if value is not None else self.absent_ttl), value)

    def _evict(self) -> None:
        """Make room: forget what has expired, or else the oldest quarter."""
        now = time.monotonic()
        expired = [key for key, (until, _) in self._known.items() if until < now]
        if len(expired) < self.size // 4:
            expired = list(itertools.islice(self._known, self.size // 4))
        for key in expired:
            del self._known[key]

    def drop(self, key: Any) -> None:
        self._known.pop(key, None)
        self._loading.pop(key, None)

    def clear(self) -> None:
        self._known.clear()
        self._loading.clear()

    def drop_where(self, match: Callable[[tuple[Any, ...]], bool]) -> None:
        """Drop every entry whose key (a tuple) `match`es."""
        for key in [k for k in (*self._known, *self._loading) if isinstance(k, tuple) and match(k)]:
            self.drop(key)


class Queries:
    """One read or one transaction on the store's engines; a connection failure is `Unavailable`."""

    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    async def _one(self, query: Any) -> Any:
        async def run() -> Any:
            async with self.engines.reader.connect() as conn:
                return (await conn.execute(query)).first()

        return await guarded(run)

    async def _all(self, query: Any) -> list[Any]:
        async def run() -> list[Any]:
            async with self.engines.reader.connect() as conn:
                return list(await conn.execute(query))

        return await guarded(run)

    async def _write(self, *statements: Any) -> None:
        async def run() -> None:
            async with self.engines.writer.begin() as conn:
                for statement in statements:
                    await conn.execute(statement)

        await guarded(run)


class SqlDirectory(Queries):
    """Who exists, which rooms exist, who belongs where. Reads use the reader engine."""

    def __init__(self, engines: Engines) -> None:
        super().__init__(engines)
        self.recent = Recent()
        self._revoked: set[str] | None = None  # loaded by `load_revoked`, then kept in memory
        self._revoked_meanwhile: set[str] | None = None  # revocations made here during a reload

    # Users

    async def get_user(self, user: UserId) -> User | None:
        if not is_id(user):
            return None

        async def load() -> User | None:
            row = await self._one(select(users).where(users.c.id == user))
            return _user(row) if row else None

        return await self.recent.get(("user", user), load)

    async def find_login(self, username: str) -> tuple[User, str] | None:
        """The user and their password hash, by username (case-insensitive)."""
        row = await self._one(select(users).where(users.c.username == username.lower()))
        return (_user(row), row.password_hash) if row else None

    async def create_user(self, username: str, name: str, role: Role, password_hash: str) -> User:
        user = User(UserId(new_id("u")), username.lower(), name, role)
        values = {"id": user.id, "username": user.username, "display_name": name, "role": role.value}
        try:
            await self._write(insert(users).values(**values, password_hash=password_hash, created_at=now_us()))
        except IntegrityError as exc:
            raise Conflict("That username is taken.") from exc
        return user

    async def set_password(self, user: UserId, password_hash: str) -> None:
        await self._write(update(users).where(users.c.id == user).values(password_hash=password_hash))

    # Rooms and membership

    async def get_room(self, room: RoomId) -> Room | None:
        if not is_id(room):
            return None

        async def load() -> Room | None:
            row = await self._one(select(rooms).where(rooms.c.id == room))
            return _room(row) if row else None

        return await self.recent.get(("room", room), load)

    async def find_room(self, name: str) -> Room | None:
        row = await self._one(select(rooms).where(rooms.c.name == name).order_by(rooms.c.created_at))
        return _room(row) if row else None

    async def set_open_hours(self, room: RoomId, hours: Mapping[str, Any] | None) -> None:
        value = None if hours is None else orjson.dumps(dict(hours)).decode()
        await self._write(update(rooms).where(rooms.c.id == room).values(open_hours=value))
        self.recent.drop(("room", room))

    async def member_role(self, room: RoomId, user: UserId) -> MemberRole | None:
        async def load() -> MemberRole | None:
            query = select(room_members.c.role).where(room_members.c.room_id == room, room_members.c.user_id == user)
            row = await self._one(query)
            return MemberRole(row.role) if row else None

        return await self.recent.get(("member", room, user), load)

    async def rooms_for(self, user: User) -> list[Room]:
        """Every room `user` may join: the drop-in rooms of their communities and the groups
        they belong to; none of a community that banned them (admins: every room)."""
        query = select(rooms).order_by(rooms.c.created_at, rooms.c.id)
        if user.role is not Role.ADMIN:
            groups = select(room_members.c.room_id).where(room_members.c.user_id == user.id)
            communities = select(members.c.community_id).where(members.c.user_id == user.id)
            banned = select(bans.c.community_id).where(bans.c.user_id == user.id)
            drop_ins = and_(rooms.c.kind == RoomKind.DROP_IN.value, rooms.c.community_id.in_(communities))
            query = query.where(or_(drop_ins, rooms.c.id.in_(groups)), rooms.c.community_id.not_in(banned))
        return [_room(row) for row in await self._all(query)]

    async def create_room(self, name: str, kind: RoomKind, creator: User, community: CommunityId) -> Room:
        room = Room(RoomId(new_id("r")), name, kind, community)
        now = now_us()
        values = {"id": room.id, "name": name, "kind": kind.value, "community_id": community}
        statements: list[Any] = [insert(rooms).values(**values, created_by=creator.id, created_at=now)]
        statements.append(  # the creator runs the room: its sessions, members and hours
            insert(room_members).values(
                room_id=room.id, user_id=creator.id, role=MemberRole.FACILITATOR.value, added_at=now
            )
        )
        await self._write(*statements)
        return room

    async def set_moderation(self, room: RoomId, slow_mode: int, suspended: str | None) -> None:
        await self._write(
            update(rooms).where(rooms.c.id == room).values(slow_mode=slow_mode, suspended_notice=suspended)
        )
        self.recent.drop(("room", room))

    def forget_room(self, room: RoomId) -> None:
        self.recent.drop(("room", room))

    def forget_role(self, room: RoomId, user: UserId) -> None:
        self.recent.drop(("member", room, user))

    async def add_member(self, room: RoomId, user: UserId, role: MemberRole) -> bool:
        self.recent.drop(("member", room, user))  # decide on what the database says now
        current = await self.member_role(room, user)
        if current is role:
            return False
        where = (room_members.c.room_id == room, room_members.c.user_id == user)
        await self._write(
            delete(room_members).where(*where),
            insert(room_members).values(room_id=room, user_id=user, role=role.value, added_at=now_us()),
        )
        self.recent.drop(("member", room, user))
        return True

    # Tokens

    async def revoke_token(self, jti: str, expires_at: int) -> None:
        with contextlib.suppress(IntegrityError):  # revoked already (two logouts at once)
            await self._write(insert(revoked_tokens).values(jti=jti, expires_at=expires_at))
        for known in (self._revoked, self._revoked_meanwhile):
            if known is not None:
                known.add(jti)

    async def is_revoked(self, jti: str) -> bool:
        """From memory once `load_revoked` ran (every worker reloads it each heartbeat, so a
        logout elsewhere counts here within one); from the database before that."""
        if self._revoked is not None:
            return jti in self._revoked
        return await self._one(select(revoked_tokens.c.jti).where(revoked_tokens.c.jti == jti)) is not None

    async def load_revoked(self) -> set[str]:
        """Every revoked token that has not expired anyway: a small set (logouts of the last
        token lifetime), kept in memory so that `auth` reads no database."""
        meanwhile: set[str] = set()  # a logout here while the read runs counts too
        self._revoked_meanwhile = meanwhile
        try:
            rows = await self._all(select(revoked_tokens.c.jti).where(revoked_tokens.c.expires_at >= now_us()))
        finally:
            self._revoked_meanwhile = None
        self._revoked = {row.jti for row in rows} | meanwhile
        return self._revoked

    async def purge_revoked(self) -> None:
        """Forget revocations of tokens that have expired anyway."""
        await self._write(delete(revoked_tokens).where(revoked_tokens.c.expires_at < now_us()))


_: type[Directory] = SqlDirectory
_revocations: type[Revocations] = SqlDirectory
