"""Notices: what every worker must act on at once, over the broker's control channel.

- an event for some people wherever they are connected (a reminder);
- a role changed in a room (its user's connections take the new role's rights);
- a token signed out (its sockets close);
- a community changed (a new agreement, a ban lifted): what was remembered is dropped;
- a member renamed: what was remembered is dropped, and their connections take the new card;
- an account banned from a community (its sockets in that community's rooms close);
- a safety case opened (an alert to the staff who should know of it).

A notice lost while the broker is away is made good later where it matters: revocations
are reloaded from the store by each heartbeat, and a role is read again at the next join.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgpack

from rooms.model import CommunityId, Member, MemberId, Role, RoomId, User, UserId
from rooms.permissions import Standing
from rooms.ports import Communities
from server.broker import Backend
from server.clients import Clients
from server.fanout import Fanout
from server.feed import pack
from server.health import Health

log = logging.getLogger("hearth.hub")

CONTROL = RoomId("_control")  # the broker channel for notices to people, not rooms

StandingIn = Callable[[User, RoomId], Awaitable[Standing]]
Forget = Callable[[RoomId, UserId], None]


class Notices:
    def __init__(
        self,
        broker: Backend,
        fanout: Fanout,
        health: Health,
        clients: Clients,
        *,
        standing: StandingIn,
        forget_role: Forget,
        forget_room: Callable[[RoomId], None],
        communities: Communities,
        worker: str,
    ) -> None:
        self.broker = broker
        self.fanout = fanout
        self.health = health
        self.clients = clients
        self.standing = standing  # what a user is in a room, read afresh
        self.forget_role = forget_role  # drop what this worker remembers of a role
        self.forget_room = forget_room  # and of a room
        self.communities = communities  # what this worker remembers of communities, members, bans
        self.worker = worker
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="control channel")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # Sending

    async def notify(self, users: Sequence[str], event: Mapping[str, Any]) -> None:
        """Push `event` to every connection of `users`, on every worker."""
        self._notify_here(set(users), event)
        await self._send({"users": list(users), "event": dict(event)})

    async def role_changed(self, room: RoomId, user: UserId) -> None:
        """`user`'s role in `room` changed: on every worker, what was remembered of it is
        dropped and their connections there take the rights of the new role."""
        await self._send({"membership": [room, user]})
        await self._recheck(room, user)

    async def signed_out(self, token_id: str) -> None:
        """A token was revoked: its sockets close on every worker now."""
        self.clients.revoke(token_id)
        await self._send({"revoked": token_id})

    async def community_changed(
        self, community: CommunityId, user: UserId | None = None, member: MemberId | None = None
    ) -> None:
        """A community's agreement, or a member's card or ban, changed: every worker drops what
        it remembers of it, so the next join reads it afresh."""
        self.communities.forget(community, user, member)
        await self._send({"community": [community, user, member]})

    async def renamed(self, member: Member) -> None:
        """`member` has a new card: on every worker, what was remembered of it is dropped and
        their connections send under the new one."""
        self._renamed_here(member)
        card = [member.id, member.community, member.account, member.name, member.role.value]
        await self._send({"renamed": card})

    def _renamed_here(self, member: Member) -> None:
        self.communities.forget(member.community, member.account, member.id)
        self.clients.renamed(member)

    async def banned(self, community: CommunityId, user: UserId) -> None:
        """`user` is banned from `community`: on every worker, what was remembered of them
        there is dropped and their sockets in its rooms close (4403). A worker that misses the
        notice (the broker away) closes them at its next heartbeat, which reloads the bans."""
        self.communities.forget(community, user, None)
        self.clients.banned(community, user)
        await self._send({"banned": [community, user]})

    async def muted(self, community: CommunityId, user: UserId) -> None:
        """`user`'s mute in `community` was set or lifted: every worker reads it afresh."""
        await self._send({"muted": [community, user]})

    async def room_changed(self, room: RoomId, event: Mapping[str, Any]) -> None:
        """A room's settings changed (slow mode, suspension): every worker reads the room
        afresh at once, and everyone in it is told `event`."""
        self._room_changed_here(room, event)
        await self._send({"room_changed": [room, dict(event)]})

    def _room_changed_here(self, room: RoomId, event: Mapping[str, Any]) -> None:
        self.forget_room(room)
        if (feed := self.fanout.feeds.get(room)) is not None:
            feed.tick(event)

    async def alert(self, community: CommunityId, room: RoomId, case: Mapping[str, Any]) -> None:
        """A case opened: on every worker, the staff in `room` and the staff on duty in any
        room of `community` get `{"ev": "alert", "room", "case"}`, and nobody else."""
        event = {"ev": "alert", "room": room, "case": dict(case)}
        self.clients.alert(community, room, event)
        await self._send({"alert": [community, room, dict(case)]})

    async def _send(self, notice: dict[str, Any]) -> None:
        await self.fanout.publish([(CONTROL, pack({**notice, "origin": self.worker}))])

    # Acting on them

    def _notify_here(self, users: set[str], event: Mapping[str, Any]) -> None:
        frames: dict[str, bytes] = {}
        for conn in self.clients.registry.all():
            if conn.user_id in users:
                frame = frames.get(conn.codec.name) or frames.setdefault(conn.codec.name, conn.codec.frame(event))
                conn.push(frame)

    async def _recheck(self, room: RoomId, user: UserId) -> None:
        self.forget_role(room, user)
        await self.clients.recheck(room, user, lambda account: self.standing(account, room))

    async def _listen(self) -> None:
        """Listen on the control channel for notices from the other workers."""
        while True:
            try:
                async with self.broker.subscribe(CONTROL) as messages:
                    self.communities.forget_all()  # what changed while it was away was not heard
                    async for raw in messages:
                        notice = msgpack.unpackb(raw, raw=False)
                        if notice.get("origin") != self.worker:
                            await self._act_on(notice)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.health.note("broker")
                log.debug("control channel: %s", type(exc).__name__)
            await asyncio.sleep(1.0)

    async def _act_on(self, notice: Mapping[str, Any]) -> None:
        """One notice from another worker. A failure here (the store, for a role) is logged
        and the listening goes on: the subscription is not what failed."""
        try:
            if "membership" in notice:
                room, user = notice["membership"]
                await self._recheck(RoomId(room), UserId(user))
            elif "revoked" in notice:
                self.clients.revoke(notice["revoked"])
            elif "community" in notice:
                community, user, member = notice["community"]
                self.communities.forget(CommunityId(community), user and UserId(user), member and MemberId(member))
                if user:  # a ban lifted
                    await self.communities.recheck_ban(CommunityId(community), UserId(user))
            elif "renamed" in notice:
                member, community, account, name, role = notice["renamed"]
                card = Member(MemberId(member), CommunityId(community), UserId(account), name, Role(role))
                self._renamed_here(card)
            elif "muted" in notice:
                community, user = notice["muted"]
                await self.communities.recheck_mute(CommunityId(community), UserId(user))
            elif "room_changed" in notice:
                room, event = notice["room_changed"]
                self._room_changed_here(RoomId(room), event)
            elif "alert" in notice:
                community, room, case = notice["alert"]
                self.clients.alert(CommunityId(community), RoomId(room), {"ev": "alert", "room": room, "case": case})
            elif "banned" in notice:
                community, user = notice["banned"]
                self.communities.forget(CommunityId(community), UserId(user), None)
                if await self.communities.recheck_ban(CommunityId(community), UserId(user)):
                    self.clients.banned(CommunityId(community), UserId(user))
            else:
                self._notify_here(set(notice["users"]), notice["event"])
        except Exception:
            log.exception("control notice failed")
