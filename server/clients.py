"""Clients: this worker's connections once signed in, and what is kept per user for them.

A connection is counted against its user's quota when it signs in (`register`) and given
back when it is gone (`forget`). The bytes held back for a user's sockets that are not
reading share one budget per user (`server.connection.Budget`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from presence.registry import ConnectionRegistry
from rooms.errors import Unavailable
from rooms.model import CommunityId, Member, RoomId, User, UserId
from rooms.permissions import Standing
from server.closecodes import CLOSE_REMOVED, CLOSE_UNAUTHENTICATED
from server.codec import Codec
from server.connection import Budget, Connection, Wire
from server.metrics import Metrics
from server.quotas import Quotas
from server.settings import Limits


class Clients:
    def __init__(self, quotas: Quotas, limits: Limits, metrics: Metrics, clock: Callable[[], float]) -> None:
        self.quotas = quotas
        self.limits = limits
        self.metrics = metrics
        self.clock = clock
        self.registry: ConnectionRegistry[Connection] = ConnectionRegistry()
        self.budgets: dict[str, Budget] = {}  # bytes held back per user, for their connections here
        self.draining = False
        self._emptied = asyncio.Event()

    def connection(self, wire: Wire, codec: Codec) -> Connection:
        return Connection(wire, codec, self.limits, self.clock(), self.metrics)

    async def register(self, conn: Connection, user: User, token_id: str) -> None:
        """A connection signed in; refused past the user's connection quota (all workers)."""
        if self.draining:
            raise Unavailable("Hearth is restarting. Reconnect and resume.")
        await self.quotas.open(user.id, conn.id, here=sum(c.user_id == user.id for c in self.registry.all()))
        conn.user = user
        conn.token_id = token_id
        budget = conn.budget = self.budgets.get(user.id) or self.budgets.setdefault(user.id, Budget())
        budget.users += 1
        self.registry.add(conn)

    async def forget(self, conn: Connection) -> None:
        """The connection is gone (and has left its rooms): give back what it was counted for."""
        conn.forget()
        user = conn.user
        if user is not None:  # set only once `register` counted the connection
            budget = conn.budget
            if budget is not None:
                budget.users -= 1
                if not budget.users and self.budgets.get(user.id) is budget:
                    del self.budgets[user.id]
            await self.quotas.close(user.id, conn.id)
        self.registry.discard(conn)
        if not len(self.registry):
            self._emptied.set()

    def revoke(self, token_id: str) -> None:
        """Close every socket signed in with a token that was just revoked."""
        for conn in self.registry.with_token(token_id):
            conn.close_soon(CLOSE_UNAUTHENTICATED, "signed out")

    def renamed(self, member: Member) -> None:
        """A member card changed (a new display name): the connections in its community's
        rooms send under the new card from now on, without joining again."""
        for conn in self.registry.all():
            if conn.user_id == member.account:
                for room, held in list(conn.members.items()):
                    if held.id == member.id:
                        conn.members[room] = member

    def alert(self, community: CommunityId, room: RoomId, event: Mapping[str, Any]) -> None:
        """Push a safety alert to the staff connections in `room`, and to those on duty in
        any room of `community`; to nobody else."""
        frames: dict[str, bytes] = {}
        for conn in self.registry.all():
            if conn.user is None or not conn.user.role.is_staff:
                continue
            here = room in conn.rooms
            on_duty = any((m := conn.members.get(r)) is not None and m.community == community for r in conn.on_duty)
            if here or on_duty:
                frame = frames.get(conn.codec.name) or frames.setdefault(conn.codec.name, conn.codec.frame(event))
                conn.push(frame)

    def banned(self, community: CommunityId, user: UserId) -> None:
        """Close every socket of `user` that is in (or joining) a room of `community`."""
        for conn in self.registry.all():
            if conn.user_id == user and any(m.community == community for m in conn.members.values()):
                conn.close_soon(CLOSE_REMOVED, "banned from this community")

    async def recheck(self, room: RoomId, user: UserId, standing: Callable[[User], Awaitable[Standing]]) -> None:
        """`user`'s role in `room` changed: their connections there take their new standing."""
        for conn in self.registry.all():
            if conn.user is not None and conn.user.id == user and room in conn.rooms:
                conn.stand(room, await standing(conn.user))

    async def close_all(self, code: int, reason: str) -> None:
        """Close every connection and return once all are gone."""
        for conn in self.registry.all():
            conn.close_soon(code, reason)
        while len(self.registry):
            self._emptied.clear()
            await self._emptied.wait()
