"""The HTTP API of the safety queue: the cases of a community, acknowledging and resolving
them, and the community's crisis resources (docs/protocol.md §9.3). Who may is the matrix's
(`rooms.permissions`: staff of the community), decided in `rooms.safety.cases`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rooms import fields
from rooms.errors import BadRequest
from rooms.model import CommunityId
from rooms.safety.cases import CaseStatus
from server.http import JSON, MAX_BODY, api, body, signed_in
from server.hub import Hub


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


@api
async def list_cases(request: Request) -> Response:
    user, _ = await signed_in(request)
    status = request.query_params.get("status")
    if status is not None and status not in {s.value for s in CaseStatus}:
        raise BadRequest("`status` is open, acked or resolved.")
    community = CommunityId(request.path_params["community"])
    found = await _hub(request).cases.queue(user, community, None if status is None else CaseStatus(status))
    return JSON({"cases": [case.public() for case in found]})


@api
async def act_on_case(request: Request) -> Response:
    user, _ = await signed_in(request)
    data = await body(request)
    action = fields.string(data, "action", max_len=20)
    note = fields.maybe_string(data, "note", max_len=MAX_BODY)
    case = await _hub(request).cases.act(user, request.path_params["case"], action, note)
    return JSON({"case": case.public()})


@api
async def set_crisis_resources(request: Request) -> Response:
    user, _ = await signed_in(request)
    data = await body(request)
    locale = data.get("locale", "en")
    community = CommunityId(request.path_params["community"])
    resources = await _hub(request).cases.set_resources(user, community, locale, data.get("resources"))
    return JSON({"resources": resources, "locale": locale})


routes = [
    Route("/api/communities/{community}/cases", list_cases, methods=["GET"]),
    Route("/api/cases/{case}", act_on_case, methods=["POST"]),
    Route("/api/communities/{community}/resources/crisis", set_crisis_resources, methods=["PUT"]),
]
