"""Communities and their members: who someone is inside one, and what they agreed to.

A member's display name is theirs in one community only, unique there by what it reads as,
and held to the rules of `rooms.names`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rooms.clock import from_us, iso_ts, now_us
from rooms.errors import AgreementRequired, BadRequest, Banned, Conflict, Forbidden, NotFound
from rooms.model import Community, CommunityId, JoinPolicy, Member, MemberId, Room, RoomId, User, UserId
from rooms.names import MAX_DISPLAY_NAME, clean_display_name, name_key
from rooms.permissions import Op, Standing, allowed, in_community, require, require_bannable
from rooms.ports import Agreement, AuditLog, Communities
from rooms.service import clean_name, clean_text

MAX_MUTE_MINUTES = 30 * 24 * 60
MAX_AGREEMENT = 20_000
MAX_REASON = 500


class CommunityService:
    """Communities, membership, the group agreement and bans, on the ports given."""

    def __init__(self, communities: Communities, audit: AuditLog) -> None:
        self.communities = communities
        self.audit = audit

    async def community(self, community_id: CommunityId) -> Community:
        community = await self.communities.get(community_id)
        if community is None:
            raise NotFound("There is no such community.")
        return community

    async def standing(self, user: User, community: CommunityId) -> Standing:
        """The actor's standing in a community (no room, no session). An account banned from
        it is no member there: a banned facilitator is staff of it no more."""
        member = await self.communities.member_of(community, user.id) is not None
        return in_community(user.role, member=member and not await self.communities.banned(community, user.id))

    async def create(self, actor: User, name: str, join: JoinPolicy) -> Community:
        require(Op.COMMUNITY_CREATE, in_community(actor.role, member=False))
        community = await self.communities.create(clean_name(name, what="Community name"), join, actor.id)
        await self.audit.record(actor.id, "community.create", community=community.id)
        return community

    async def listed(self, actor: User) -> list[tuple[Community, Member | None]]:
        """The open communities and `actor`'s; every one for those who may add people to a
        community they are not in (admins)."""
        everything = allowed(Op.MEMBER_INVITE, in_community(actor.role, member=False))
        return await self.communities.listed(actor.id, everything)

    async def join(self, actor: User, community_id: CommunityId, display_name: str) -> Member:
        """`actor` joins an open community under `display_name` (Conflict when the name is
        another member's, or they are a member already). Joining one by invitation is adding
        oneself: for whom the matrix lets add people to it."""
        community = await self.community(community_id)
        if community.join is not JoinPolicy.OPEN and not allowed(
            Op.MEMBER_INVITE, await self.standing(actor, community.id)
        ):
            raise Forbidden("This community is by invitation. Ask its staff to add you.")
        return await self._add(actor, community, actor, display_name)

    async def invite(self, actor: User, community_id: CommunityId, account: User | None, display_name: str) -> Member:
        """Staff add an account to the community under `display_name`."""
        community = await self.community(community_id)
        require(Op.MEMBER_INVITE, await self.standing(actor, community.id))
        if account is None:
            raise NotFound("There is no such user.")
        member = await self._add(actor, community, account, display_name)
        await self.audit.record(actor.id, "member.add", community=community.id, target=member.id)
        return member

    async def _add(self, actor: User, community: Community, account: User, display_name: str) -> Member:
        if await self.communities.banned(community.id, account.id):
            raise Banned("This account is banned from this community.")
        name = clean_display_name(display_name, account.role)
        return await self.communities.add_member(community.id, account, name, name_key(name))

    async def me(self, actor: User, community_id: CommunityId) -> Member:
        """The actor's own card in the community: NotFound when they have none, Banned while
        their account is banned from it (their card stays, but they do nothing with it)."""
        community = await self.community(community_id)
        member = await self.communities.member_of(community.id, actor.id)
        if member is None:
            raise NotFound("You are not a member of this community.")
        if await self.communities.banned(community.id, actor.id):
            raise Banned("This account is banned from this community.")
        return member

    async def rename(self, actor: User, community_id: CommunityId, display_name: str) -> Member:
        member = await self.me(actor, community_id)
        name = clean_display_name(display_name, actor.role)
        if name == member.name:
            return member
        return await self.communities.rename(member, name, name_key(name))

    async def home_for_room(self, actor: User, community_id: object) -> Community:
        """The community a new room goes in: the one named (where `actor` is staff), or the
        only one there is; BadRequest when there are several and none is named."""
        if community_id is None:
            only = await self.communities.only()
            if only is None:
                raise BadRequest("Name the room's `community`.")
            community = only
        elif isinstance(community_id, str) and len(community_id) <= 64:
            community = await self.community(CommunityId(community_id))
        else:
            raise BadRequest("`community` must be a community id.")
        require(Op.ROOM_CREATE, await self.standing(actor, community.id))
        return community

    async def card_of_account(self, actor: User, room: Room, account: UserId) -> Member:
        """The member card an account has in `room`'s community, for one who runs the room
        and names the person by account: NotFound when it has none (add them to the community
        first). Linking an account to its card is a reading of another member's account: it
        is audited like one."""
        member = await self.communities.member_of(room.community, account)
        if member is None:
            raise NotFound("That person is not a member of this room's community.")
        await self.audit.record(actor.id, "member.account", community=room.community, room=room.id, target=member.id)
        return member

    async def member_in(self, community: CommunityId, member_id: MemberId) -> Member:
        """The member of `community` with that id: NotFound for another community's."""
        member = await self.communities.member(member_id)
        if member is None or member.community != community:
            raise NotFound("There is no such member in this community.")
        return member

    async def account_of(self, actor: User, community_id: CommunityId, member_id: MemberId) -> Member:
        """Whose card it is, for the community's staff; every reading is audited."""
        community = await self.community(community_id)
        require(Op.MEMBER_ACCOUNT, await self.standing(actor, community.id))
        member = await self.member_in(community.id, member_id)
        await self.audit.record(actor.id, "member.account", community=community.id, target=member.id)
        return member

    async def ids_in(self, community: CommunityId, accounts: Sequence[UserId]) -> list[str]:
        """The member ids `accounts` have in `community`, in their order (none for an account
        that is not a member, or is banned there)."""
        return [member.id for member in await self._present(community, accounts)]

    async def in_good_standing(self, community: CommunityId, accounts: Sequence[UserId]) -> list[UserId]:
        """Those of `accounts` who are members of `community` and not banned there: whom its
        rooms' reminders and sessions count."""
        return [member.account for member in await self._present(community, accounts)]

    async def _present(self, community: CommunityId, accounts: Sequence[UserId]) -> list[Member]:
        found = [await self.communities.member_of(community, account) for account in accounts]
        return [m for m in found if m is not None and not await self.communities.banned(community, m.account)]

    async def account(self, community: CommunityId, member_id: str) -> UserId | None:
        """The account behind a member id of `community` (None: no such member there)."""
        member = await self.communities.member(MemberId(member_id))
        return member.account if member is not None and member.community == community else None

    # Entering a room

    async def enter(self, user: User, room: Room) -> Member:
        """The member `user` is in `room`'s community, once they may enter it: not banned, a
        member (admins become one under their account's name when they first come), and the
        current agreements (the community's, then the room's own) accepted."""
        if await self.communities.banned(room.community, user.id):
            raise Banned("This account is banned from this community.")
        member = await self.own_card(user, room.community)
        for scope in (None, room.id):
            agreement = await self.communities.agreement(room.community, scope)
            if agreement is not None and not await self.communities.accepted(member.id, agreement):
                raise AgreementRequired("Please read and accept the group agreement first.", agreement.public())
        return member

    async def own_card(self, user: User, community: CommunityId) -> Member:
        """The member `user` is in `community`; admins, staff everywhere, become one under their
        account's name the first time they need a card there; anyone else: Forbidden."""
        member = await self.communities.member_of(community, user.id)
        if member is None:
            if not allowed(Op.ROOM_ENTER, in_community(user.role, member=False)):  # admins enter anywhere
                raise Forbidden("Join this room's community first.")
            member = await self._admin_member(user, community)
        return member

    async def _admin_member(self, user: User, community: CommunityId) -> Member:
        # An account's name may be twice as long as a display name: it is cut, not refused.
        # Ten tries: names taken on purpose cannot make an admin's visit cost a read each.
        name = clean_display_name(user.name[:MAX_DISPLAY_NAME], user.role)
        for n in range(1, 11):
            shown = name if n == 1 else f"{name[: MAX_DISPLAY_NAME - 4]} {n}"
            try:
                member = await self.communities.add_member(community, user, shown, name_key(shown))
            except Conflict:  # the name is taken; or they were made a member meanwhile
                if (meanwhile := await self.communities.member_of(community, user.id)) is not None:
                    return meanwhile
                continue
            await self.audit.record(user.id, "member.add", community=community, target=member.id)
            return member
        raise BadRequest("Choose a display name for this community first.")

    # Timed mutes

    async def mute(
        self, actor: User, community_id: CommunityId, member_id: MemberId, minutes: object, reason: str
    ) -> tuple[Member, int]:
        """Mute a member in every room of the community for `minutes` (1 to 30 days'
        worth); returns them and until when (microseconds since the epoch)."""
        member = await self._moderated(actor, community_id, member_id, Op.COMMUNITY_MUTE)
        if isinstance(minutes, bool) or not isinstance(minutes, int) or not 1 <= minutes <= MAX_MUTE_MINUTES:
            raise BadRequest(f"`minutes` must be a whole number from 1 to {MAX_MUTE_MINUTES}.")
        reason = clean_text(reason, max_chars=MAX_REASON, what="Reason")
        until = now_us() + minutes * 60_000_000
        await self.communities.mute(member.community, member.account, until, actor.id, reason)
        await self.audit.record(
            actor.id, "mute", community=member.community, target=member.id, reason=f"{minutes} min: {reason}"
        )
        return member, until

    async def unmute(self, actor: User, community_id: CommunityId, member_id: MemberId) -> Member:
        member = await self._moderated(actor, community_id, member_id, Op.COMMUNITY_MUTE)
        if not await self.communities.unmute(member.community, member.account):
            raise NotFound("That member is not muted.")
        await self.audit.record(actor.id, "mute.lift", community=member.community, target=member.id)
        return member

    async def _moderated(self, actor: User, community_id: CommunityId, member_id: MemberId, op: Op) -> Member:
        """The member `actor` acts on with `op`, once they may: as staff of the community, on
        someone neither themselves nor an admin; a member of staff only as an admin."""
        community = await self.community(community_id)
        standing = await self.standing(actor, community.id)
        require(op, standing)
        member = await self.member_in(community.id, member_id)
        require_bannable(member.role, itself=member.account == actor.id)
        if member.role.is_staff:
            require(Op.BAN_STAFF, standing)
        return member

    async def require_unmuted(self, member: Member) -> None:
        """Forbidden while `member` is muted in their community."""
        until = await self.communities.muted_until(member.community, member.account)
        if until > now_us():
            raise Forbidden(f"You are muted in this community until {iso_ts(from_us(until))}.")

    # The audit log

    async def audit_entries(
        self, actor: User, community_id: CommunityId | None, before: int | None, limit: int
    ) -> list[dict[str, Any]]:
        """The audit log, newest first: a community's for its clinicians and admins, all of
        it for admins. Actors and targets are as recorded (accounts, member ids): this is for
        those who may know them."""
        if community_id is None:
            require(Op.AUDIT_READ, in_community(actor.role, member=False))  # admins only
        else:
            await self.community(community_id)
            require(Op.AUDIT_READ, await self.standing(actor, community_id))
        return await self.audit.read(community_id, before, limit)

    # The group agreement

    async def set_agreement(self, actor: User, community_id: CommunityId, text: str, room: Room | None) -> Agreement:
        community = await self.community(community_id)
        require(Op.AGREEMENT_SET, await self.standing(actor, community.id))
        if room is not None and room.community != community.id:
            raise NotFound("There is no such room in this community.")
        text = clean_text(text, max_chars=MAX_AGREEMENT, what="Agreement")
        agreement = await self.communities.set_agreement(
            community.id, None if room is None else room.id, text, actor.id
        )
        await self.audit.record(
            actor.id, "agreement.set", community=community.id, room=agreement.room, reason=f"v{agreement.version}"
        )
        return agreement

    async def agreement(
        self, actor: User, community_id: CommunityId, room: Room | None = None
    ) -> tuple[Agreement | None, bool]:
        """The current agreement (the community's, or `room`'s own), and whether `actor`
        accepted it (True when there is none)."""
        member = await self.me(actor, community_id)
        agreement = await self.communities.agreement(member.community, _scope(member, room))
        return agreement, agreement is None or await self.communities.accepted(member.id, agreement)

    async def accept(self, actor: User, community_id: CommunityId, version: int, room: Room | None = None) -> Agreement:
        """Record the acceptance of `version`: Conflict unless it is the current one."""
        member = await self.me(actor, community_id)
        agreement = await self.communities.agreement(member.community, _scope(member, room))
        if agreement is None or agreement.version != version:
            raise Conflict("That is not the current version of the agreement.")
        await self.communities.accept(member.id, agreement)
        return agreement

    # Bans

    async def ban(self, actor: User, community_id: CommunityId, member_id: MemberId, reason: str) -> Member:
        community = await self.community(community_id)
        standing = await self.standing(actor, community.id)
        require(Op.BAN, standing)
        member = await self.member_in(community.id, member_id)
        require_bannable(member.role, itself=member.account == actor.id)
        if member.role.is_staff:
            require(Op.BAN_STAFF, standing)
        reason = clean_text(reason, max_chars=MAX_REASON, what="Reason")
        if not await self.communities.ban(community.id, member.account, actor.id, reason):
            raise Conflict("That member is banned already.")
        await self.audit.record(actor.id, "ban", community=community.id, target=member.id, reason=reason)
        return member

    async def unban(self, actor: User, community_id: CommunityId, member_id: MemberId) -> Member:
        community = await self.community(community_id)
        standing = await self.standing(actor, community.id)
        require(Op.BAN, standing)
        member = await self.member_in(community.id, member_id)
        if member.role.is_staff:
            require(Op.BAN_STAFF, standing)
        if not await self.communities.unban(community.id, member.account):
            raise NotFound("That member is not banned.")
        await self.audit.record(actor.id, "ban.lift", community=community.id, target=member.id)
        return member


def _scope(member: Member, room: Room | None) -> RoomId | None:
    """The room whose own agreement is meant (None: the community's); NotFound for a room
    of another community."""
    if room is None:
        return None
    if room.community != member.community:
        raise NotFound("There is no such room in this community.")
    return room.id
