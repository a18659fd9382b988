"""The HTTP API of communities: communities, members and their names, the group agreement,
bans (docs/protocol.md §9.2).

Each handler reads the request, asks `rooms.communities` and encodes its answer; who may do
what is decided there, by the permission matrix (`rooms.permissions`). A change that other
workers remember (a card, a ban, an agreement) is told to them (`server.notices`).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rooms import fields
from rooms.clock import from_us, iso_ts
from rooms.errors import BadRequest
from rooms.model import CommunityId, JoinPolicy, Member, MemberId, Room, RoomId, UserId
from server.http import JSON, MAX_BODY, api, body, signed_in
from server.hub import Hub


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _community(request: Request) -> CommunityId:
    return CommunityId(request.path_params["community"])


def _text(data: dict[str, Any], name: str) -> str:
    return fields.string(data, name, max_len=MAX_BODY)


def _card(member: Member | None) -> dict[str, str] | None:
    return None if member is None else member.public()


@api
async def create_community(request: Request) -> Response:
    user, _ = await signed_in(request)
    data = await body(request)
    join = data.get("join", JoinPolicy.OPEN.value)
    if not isinstance(join, str) or join not in {j.value for j in JoinPolicy}:
        raise BadRequest("`join` must be open or invite.")
    hub = _hub(request)
    community = await hub.members.create(user, _text(data, "name"), JoinPolicy(join))
    await hub.notices.community_changed(community.id)  # other workers: no longer the only one
    return JSON({"community": community.public()}, status_code=201)


@api
async def list_communities(request: Request) -> Response:
    user, _ = await signed_in(request)
    listed = await _hub(request).members.listed(user)
    return JSON({"communities": [{**c.public(), "member": _card(m)} for c, m in listed]})


@api
async def add_member(request: Request) -> Response:
    """Join an open community under a display name; or, with `user`, staff add an account."""
    user, _ = await signed_in(request)
    data = await body(request)
    hub, community = _hub(request), _community(request)
    name = _text(data, "display_name")
    if "user" in data:
        account = await hub.directory.get_user(UserId(fields.string(data, "user", max_len=fields.ID)))
        member = await hub.members.invite(user, community, account, name)
    else:
        member = await hub.members.join(user, community, name)
    return JSON({"member": member.public()}, status_code=201)


@api
async def rename_me(request: Request) -> Response:
    user, _ = await signed_in(request)
    data = await body(request)
    hub = _hub(request)
    member = await hub.members.rename(user, _community(request), _text(data, "display_name"))
    await hub.notices.renamed(member)
    return JSON({"member": member.public()})


@api
async def member_account(request: Request) -> Response:
    """Whose a member card is: for the community's staff, and every reading is audited."""
    user, _ = await signed_in(request)
    member_id = MemberId(request.path_params["member"])
    member = await _hub(request).members.account_of(user, _community(request), member_id)
    return JSON({"member": member.public(), "account": {"id": member.account}})


@api
async def set_agreement(request: Request) -> Response:
    user, _ = await signed_in(request)
    data = await body(request)
    hub, community = _hub(request), _community(request)
    room = await _maybe_room(hub, data)
    agreement = await hub.members.set_agreement(user, community, _text(data, "text"), room)
    await hub.notices.community_changed(community)
    return JSON({"version": agreement.version, **({"room": agreement.room} if agreement.room else {})})


async def _maybe_room(hub: Hub, data: Any) -> Room | None:
    """The room a request names with `room` (its own agreement), or None for the community's."""
    if data.get("room") is None:
        return None
    return await hub.service.room(RoomId(fields.string(data, "room", max_len=fields.ID)))


@api
async def get_agreement(request: Request) -> Response:
    user, _ = await signed_in(request)
    hub = _hub(request)
    room = await _maybe_room(hub, request.query_params)
    agreement, accepted = await hub.members.agreement(user, _community(request), room)
    if agreement is None:
        return JSON({"version": 0, "text": "", "accepted": True})
    return JSON({"version": agreement.version, "text": agreement.text, "accepted": accepted})


@api
async def accept_agreement(request: Request) -> Response:
    user, _ = await signed_in(request)
    data = await body(request)
    version = fields.integer(data, "version", low=1)
    hub = _hub(request)
    agreement = await hub.members.accept(user, _community(request), version, await _maybe_room(hub, data))
    return JSON({"version": agreement.version, "accepted": True})


@api
async def ban(request: Request) -> Response:
    user, _ = await signed_in(request)
    data = await body(request)
    hub, community = _hub(request), _community(request)
    member_id = MemberId(fields.string(data, "member", max_len=fields.ID))
    member = await hub.members.ban(user, community, member_id, _text(data, "reason"))
    await hub.notices.banned(community, member.account)
    return JSON({"ban": {"member": member.public()}}, status_code=201)


@api
async def lift_ban(request: Request) -> Response:
    user, _ = await signed_in(request)
    hub, community = _hub(request), _community(request)
    member = await hub.members.unban(user, community, MemberId(request.path_params["member"]))
    await hub.notices.community_changed(community, member.account)
    return JSON({})


@api
async def read_audit(request: Request) -> Response:
    """The audit log, newest first, `limit` (1–500, 100 by default) at a time; `before` an
    entry id to page back from."""
    user, _ = await signed_in(request)
    params = request.query_params
    community = params.get("community")
    limit = _query_int(params.get("limit"), "limit", 1, 500) or 100
    before = _query_int(params.get("before"), "before", 1, 2**62)
    entries = await _hub(request).members.audit_entries(
        user, None if community is None else CommunityId(community), before, limit
    )
    return JSON({"entries": entries})


def _query_int(value: str | None, name: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or not low <= int(value) <= high:
        raise BadRequest(f"`{name}` must be a whole number from {low} to {high}.")
    return int(value)


@api
async def mute(request: Request) -> Response:
    user, _ = await signed_in(request)
    data = await body(request)
    hub, community = _hub(request), _community(request)
    member_id = MemberId(fields.string(data, "member", max_len=fields.ID))
    member, until = await hub.members.mute(user, community, member_id, data.get("minutes"), _text(data, "reason"))
    await hub.notices.muted(member.community, member.account)
    return JSON({"mute": {"member": member.public(), "until": iso_ts(from_us(until))}}, status_code=201)


@api
async def lift_mute(request: Request) -> Response:
    user, _ = await signed_in(request)
    hub, community = _hub(request), _community(request)
    member = await hub.members.unmute(user, community, MemberId(request.path_params["member"]))
    await hub.notices.muted(member.community, member.account)
    return JSON({})


routes = [
    Route("/api/communities/{community}/mutes", mute, methods=["POST"]),
    Route("/api/communities/{community}/mutes/{member}", lift_mute, methods=["DELETE"]),
    Route("/api/audit", read_audit, methods=["GET"]),
    Route("/api/communities", create_community, methods=["POST"]),
    Route("/api/communities", list_communities, methods=["GET"]),
    Route("/api/communities/{community}/members", add_member, methods=["POST"]),
    Route("/api/communities/{community}/members/me", rename_me, methods=["PATCH"]),
    Route("/api/communities/{community}/members/{member}", member_account, methods=["GET"]),
    Route("/api/communities/{community}/agreement", set_agreement, methods=["PUT"]),
    Route("/api/communities/{community}/agreement", get_agreement, methods=["GET"]),
    Route("/api/communities/{community}/agreement/accept", accept_agreement, methods=["POST"]),
    Route("/api/communities/{community}/bans", ban, methods=["POST"]),
    Route("/api/communities/{community}/bans/{member}", lift_ban, methods=["DELETE"]),
]
