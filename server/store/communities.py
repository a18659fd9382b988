"""SqlCommunities: communities, members, bans and agreements; SqlAuditLog: the audit log."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from rooms.clock import from_us, iso_ts, now_us
from rooms.errors import Conflict
from rooms.fields import is_id
from rooms.model import Community, CommunityId, JoinPolicy, Member, MemberId, Role, RoomId, User, UserId
from rooms.ports import Agreement, AuditLog, Communities
from server.store.directory import Queries, Recent, new_id
from server.store.tables import acceptances, agreements, audit_log, bans, communities, members, mutes, users

_MEMBER_COLUMNS = (members.c.id, members.c.community_id, members.c.user_id, members.c.display_name, users.c.role)


def _community(row: Any) -> Community:
    return Community(CommunityId(row.id), row.name, JoinPolicy(row.join_policy))


def _member(row: Any) -> Member:
    community, account = CommunityId(row.community_id), UserId(row.user_id)
    return Member(MemberId(row.id), community, account, row.display_name, Role(row.role))


def _scope(room: RoomId | None) -> str:
    return "" if room is None else room


class SqlCommunities(Queries):
    """Reads of the join path are remembered (`Recent`): a member card by account and by id,
    a ban, the current agreement; and an acceptance once given (it never stops being given;
    one not given is read again each time).
    A change drops its entries here at once; `forget` drops them on other workers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A member who is not one yet is read again at once: joining a community on one worker
        # and a room on another a moment later must not find "not a member" remembered.
        self.recent = Recent(absent_ttl=0.0)
        self._bans: set[tuple[CommunityId, UserId]] | None = None  # loaded by `load_bans`
        self._bans_meanwhile: list[tuple[tuple[CommunityId, UserId], bool]] | None = None
        self._mutes: dict[tuple[CommunityId, UserId], int] | None = None  # loaded with the bans
        self._accepted: set[tuple[str, str, int]] = set()  # (member, scope, version): given for good

    async def create(self, name: str, join: JoinPolicy, creator: UserId) -> Community:
        community = Community(CommunityId(new_id("c")), name, join)
        await self._write(
            insert(communities).values(
                id=community.id, name=name, join_policy=join.value, created_by=creator, created_at=now_us()
            )
        )
        self.recent.drop("only")
        return community

    async def get(self, community: CommunityId) -> Community | None:
        if not is_id(community):
            return None

        async def load() -> Community | None:
            row = await self._one(select(communities).where(communities.c.id == community))
            return _community(row) if row else None

        return await self.recent.get(("community", community), load)

    async def only(self) -> Community | None:
        async def load() -> Community | None:
            rows = await self._all(select(communities).limit(2))
            return _community(rows[0]) if len(rows) == 1 else None

        return await self.recent.get("only", load)

    async def listed(self, user: UserId, everything: bool) -> list[tuple[Community, Member | None]]:
        mine = members.c.community_id == communities.c.id
        query = (
            select(communities, members.c.id.label("member_id"), members.c.display_name, users.c.role)
            .select_from(communities)
            .outerjoin(members, and_(mine, members.c.user_id == user))
            .outerjoin(users, users.c.id == members.c.user_id)
            .order_by(communities.c.created_at, communities.c.id)
        )
        if not everything:
            query = query.where(or_(communities.c.join_policy == JoinPolicy.OPEN.value, members.c.id.is_not(None)))
        listed: list[tuple[Community, Member | None]] = []
        for row in await self._all(query):
            community = _community(row)
            member = None
            if row.member_id is not None:
                member = Member(MemberId(row.member_id), community.id, user, row.display_name, Role(row.role))
            listed.append((community, member))
        return listed

    async def member_of(self, community: CommunityId, user: UserId) -> Member | None:
        async def load() -> Member | None:
            query = (
                select(*_MEMBER_COLUMNS)
                .join(users, users.c.id == members.c.user_id)
                .where(members.c.community_id == community, members.c.user_id == user)
            )
            row = await self._one(query)
            return _member(row) if row else None

        return await self.recent.get(("member_of", community, user), load)

    async def member(self, member: MemberId) -> Member | None:
        if not is_id(member):
            return None

        async def load() -> Member | None:
            query = select(*_MEMBER_COLUMNS).join(users, users.c.id == members.c.user_id).where(members.c.id == member)
            row = await self._one(query)
            return _member(row) if row else None

        return await self.recent.get(("member", member), load)

    async def add_member(self, community: CommunityId, user: User, name: str, key: str) -> Member:
        member = Member(MemberId(new_id("m")), community, user.id, name, user.role)
        values = {"id": member.id, "community_id": community, "user_id": user.id, "display_name": name}
        try:
            await self._write(insert(members).values(**values, name_key=key, joined_at=now_us()))
        except IntegrityError as exc:
            self.recent.drop(("member_of", community, user.id))
            if await self.member_of(community, user.id) is not None:
                raise Conflict("You are a member of this community already.") from exc
            raise Conflict("That name is taken in this community. Please choose another.") from exc
        self.recent.drop(("member_of", community, user.id))
        return member

    async def rename(self, member: Member, name: str, key: str) -> Member:
        try:
            await self._write(update(members).where(members.c.id == member.id).values(display_name=name, name_key=key))
        except IntegrityError as exc:
            raise Conflict("That name is taken in this community. Please choose another.") from exc
        self.forget(member.community, member.account, member.id)
        return Member(member.id, member.community, member.account, name, member.role)

    async def banned(self, community: CommunityId, user: UserId) -> bool:
        """From memory once `load_bans` ran (every worker reloads it each heartbeat, and a ban
        made on another worker is read at once when its notice comes); from the store before."""
        if self._bans is not None:
            return (community, user) in self._bans
        return await self._read_ban(community, user)

    async def _read_ban(self, community: CommunityId, user: UserId) -> bool:
        query = select(bans.c.user_id).where(bans.c.community_id == community, bans.c.user_id == user)
        return await self._one(query) is not None

    async def load_bans(self) -> frozenset[tuple[CommunityId, UserId]]:
        """Every ban, read again from the store: a small table (the accounts put out of some
        community), kept in memory so that a join reads nothing for it."""
        self._bans_meanwhile = []  # a ban or a lift made here while the read runs counts too
        try:
            rows = await self._all(select(bans.c.community_id, bans.c.user_id))
            loaded = {(CommunityId(row.community_id), UserId(row.user_id)) for row in rows}
            for key, banned in self._bans_meanwhile:
                (loaded.add if banned else loaded.discard)(key)
        finally:
            self._bans_meanwhile = None
        self._bans = loaded
        rows = await self._all(
            select(mutes.c.community_id, mutes.c.user_id, mutes.c.until).where(mutes.c.until > now_us())
        )
        self._mutes = {(CommunityId(row.community_id), UserId(row.user_id)): int(row.until) for row in rows}
        return frozenset(loaded)

    async def recheck_ban(self, community: CommunityId, user: UserId) -> bool:
        """Read one account's ban from the store now (a notice says it changed elsewhere)."""
        banned = await self._read_ban(community, user)
        self._note_ban((community, user), banned)
        return banned

    def _note_ban(self, key: tuple[CommunityId, UserId], banned: bool) -> None:
        for known in (self._bans, self._bans_meanwhile):
            if isinstance(known, set):
                (known.add if banned else known.discard)(key)
            elif isinstance(known, list):
                known.append((key, banned))

    async def ban(self, community: CommunityId, user: UserId, actor: UserId, reason: str) -> bool:
        values = {"community_id": community, "user_id": user, "banned_by": actor, "reason": reason}
        try:
            await self._write(insert(bans).values(**values, created_at=now_us()))
        except IntegrityError:
            return False
        self._note_ban((community, user), True)
        return True

    async def unban(self, community: CommunityId, user: UserId) -> bool:
        where = (bans.c.community_id == community, bans.c.user_id == user)
        found = await self._one(select(bans.c.user_id).where(*where))
        if found is not None:
            await self._write(bans.delete().where(*where))
        self._note_ban((community, user), False)
        return found is not None

    async def muted_until(self, community: CommunityId, user: UserId) -> int:
        """From memory once `load_bans` ran (it reloads mutes too, each heartbeat)."""
        if self._mutes is None:
            return await self._read_mute(community, user)
        return self._mutes.get((community, user), 0)

    async def _read_mute(self, community: CommunityId, user: UserId) -> int:
        query = select(mutes.c.until).where(mutes.c.community_id == community, mutes.c.user_id == user)
        row = await self._one(query)
        return 0 if row is None else int(row.until)

    async def mute(self, community: CommunityId, user: UserId, until: int, actor: UserId, reason: str) -> None:
        where = (mutes.c.community_id == community, mutes.c.user_id == user)
        values = {"until": until, "muted_by": actor, "reason": reason, "created_at": now_us()}
        await self._write(
            mutes.delete().where(*where), insert(mutes).values(community_id=community, user_id=user, **values)
        )
        if self._mutes is not None:
            self._mutes[(community, user)] = until

    async def unmute(self, community: CommunityId, user: UserId) -> bool:
        found = await self._read_mute(community, user) > now_us()
        await self._write(mutes.delete().where(mutes.c.community_id == community, mutes.c.user_id == user))
        if self._mutes is not None:
            self._mutes.pop((community, user), None)
        return found

    async def recheck_mute(self, community: CommunityId, user: UserId) -> None:
        until = await self._read_mute(community, user)
        if self._mutes is not None:
            if until:
                self._mutes[(community, user)] = until
            else:
                self._mutes.pop((community, user), None)

    async def agreement(self, community: CommunityId, room: RoomId | None) -> Agreement | None:
        async def load() -> Agreement | None:
            query = (
                select(agreements.c.version, agreements.c.text)
                .where(agreements.c.community_id == community, agreements.c.scope == _scope(room))
                .order_by(agreements.c.version.desc())
                .limit(1)
            )
            row = await self._one(query)
            return Agreement(community, room, row.version, row.text) if row else None

        return await self.recent.get(("agreement", community, _scope(room)), load)

    async def set_agreement(self, community: CommunityId, room: RoomId | None, text: str, actor: UserId) -> Agreement:
        scope = _scope(room)
        where = (agreements.c.community_id == community, agreements.c.scope == scope)
        for _ in range(5):  # two staff saving at once: the second takes the next version
            row = await self._one(select(func.max(agreements.c.version).label("v")).where(*where))
            version = (row.v or 0) + 1
            values = {"community_id": community, "scope": scope, "version": version, "text": text}
            try:
                await self._write(insert(agreements).values(**values, created_by=actor, created_at=now_us()))
            except IntegrityError:
                continue
            self.recent.drop(("agreement", community, scope))
            return Agreement(community, room, version, text)
        raise Conflict("The agreement is being changed by someone else. Please try again.")

    async def accepted(self, member: MemberId, agreement: Agreement) -> bool:
        key = (member, _scope(agreement.room), agreement.version)
        if key in self._accepted:
            return True
        query = select(acceptances.c.version).where(
            acceptances.c.member_id == member,
            acceptances.c.scope == key[1],
            acceptances.c.version == agreement.version,
        )
        if await self._one(query) is None:
            return False  # not remembered: accepted on another worker, it holds at once
        self._remember(key)
        return True

    async def accept(self, member: MemberId, agreement: Agreement) -> None:
        values = {"member_id": member, "scope": _scope(agreement.room), "version": agreement.version}
        with contextlib.suppress(IntegrityError):  # accepted already
            await self._write(insert(acceptances).values(**values, accepted_at=now_us()))
        self._remember((member, _scope(agreement.room), agreement.version))

    def _remember(self, key: tuple[str, str, int]) -> None:
        if len(self._accepted) >= 100_000:
            self._accepted.clear()
        self._accepted.add(key)

    def forget_all(self) -> None:
        """Drop everything remembered (the control channel was away: changes may be missed)."""
        self.recent.clear()

    def forget(self, community: CommunityId, user: UserId | None = None, member: MemberId | None = None) -> None:
        self.recent.drop_where(lambda key: key[:2] == ("agreement", community))
        self.recent.drop("only")  # a community made on another worker: there may be two now
        if user is not None:
            self.recent.drop(("member_of", community, user))
        if member is not None:
            self.recent.drop(("member", member))


class SqlAuditLog(Queries):
    async def record(
        self,
        actor: UserId,
        action: str,
        *,
        community: CommunityId | None = None,
        room: RoomId | None = None,
        target: str | None = None,
        reason: str | None = None,
    ) -> None:
        values = {"actor": actor, "action": action, "community_id": community, "room_id": room, "target": target}
        await self._write(insert(audit_log).values(**values, reason=reason, at=now_us()))

    async def read(self, community: CommunityId | None, before: int | None, limit: int) -> list[dict[str, Any]]:
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if community is not None:
            query = query.where(audit_log.c.community_id == community)
        if before is not None:
            query = query.where(audit_log.c.id < before)
        return [
            {
                "id": row.id,
                "at": iso_ts(from_us(row.at)),
                "actor": row.actor,
                "action": row.action,
                "community": row.community_id,
                "room": row.room_id,
                "target": row.target,
                "reason": row.reason,
            }
            for row in await self._all(query)
        ]


_: type[Communities] = SqlCommunities
_audit: type[AuditLog] = SqlAuditLog
