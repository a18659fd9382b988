"""The HTTP API of scheduled sessions: sessions, occurrences, registration, iCalendar feeds.

Each handler reads the request, asks `rooms.schedule_service` and encodes its answer; who may
do what, and what it does, is decided there. A handler that acts on a session asks for its
permit first, and reads the rest of the request after, so a request that is both refused
and malformed is answered as refused.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rooms.model import RoomId
from rooms.schedule import Occurrence, SessionId, parse_instant, parse_key
from rooms.schedule_rules import Attendance
from rooms.schedule_service import Action, ScheduleService
from server.auth import load_secret
from server.feed_tokens import FeedTokens
from server.http import JSON, api, body, signed_in
from server.hub import Hub
from server.ics import ics_response
from server.workpool import WorkPool

# Wiring


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _schedule(request: Request) -> ScheduleService:
    """The service on the app's schedule store and the hub's directory (made once, when first asked)."""
    schedule: ScheduleService | None = getattr(request.app.state, "schedule_service", None)
    if schedule is None:
        hub = _hub(request)
        schedule = ScheduleService(request.app.state.schedule, hub.directory, hub.members)
        request.app.state.schedule_service = schedule
    return schedule


def _feed_tokens(request: Request) -> FeedTokens:
    tokens: FeedTokens | None = getattr(request.app.state, "feed_tokens", None)
    if tokens is None:
        tokens = request.app.state.feed_tokens = FeedTokens(load_secret(_hub(request).settings))
    return tokens


def _room(request: Request) -> RoomId:
    return RoomId(request.path_params["room"])


def _session(request: Request) -> SessionId:
    return SessionId(request.path_params["session"])


def _occurrence_wire(occurrence: Occurrence, attendance: Attendance) -> dict[str, Any]:
    return {
        **occurrence.to_wire(),
        "registered": attendance.registered,
        "waitlisted": attendance.waitlisted,
        "my_status": attendance.mine,
    }


# Sessions


@api
async def create_session(request: Request) -> Response:
    user, _ = await signed_in(request)
    schedule = _schedule(request)
    permit = await schedule.permit_scheduling(user, _room(request))
    session = await schedule.create(permit, await body(request))
    return JSON({"session": await schedule.card(permit.room, session)}, status_code=201)


@api
async def list_sessions(request: Request) -> Response:
    user, _ = await signed_in(request)
    schedule = _schedule(request)
    room, sessions = await schedule.sessions(user, _room(request))
    return JSON({"sessions": [await schedule.card(room, s) for s in sessions]})


@api
async def update_session(request: Request) -> Response:
    user, _ = await signed_in(request)
    schedule = _schedule(request)
    permit = await schedule.permit(user, _session(request), Action.MANAGE)
    session = await schedule.update(permit, await body(request))
    return JSON({"session": await schedule.card(permit.room, session)})


# Occurrences


@api
async def list_occurrences(request: Request) -> Response:
    user, _ = await signed_in(request)
    schedule = _schedule(request)
    permit = await schedule.permit(user, _session(request), Action.SEE)
    params = request.query_params
    start = parse_instant(params["from"], "from") if "from" in params else None
    end = parse_instant(params["to"], "to") if "to" in params else None
    found = await schedule.occurrences(permit, start, end)
    return JSON({"occurrences": [_occurrence_wire(*entry) for entry in found]})


@api
async def cancel_occurrence(request: Request) -> Response:
    user, _ = await signed_in(request)
    schedule = _schedule(request)
    permit = await schedule.permit(user, _session(request), Action.MANAGE)
    key = parse_key(request.path_params["key"])
    data = await body(request, optional=True)
    found = await schedule.cancel(permit, key, reason=data.get("reason"))
    return JSON({"occurrence": _occurrence_wire(*found)})


@api
async def move_occurrence(request: Request) -> Response:
    user, _ = await signed_in(request)
    schedule = _schedule(request)
    permit = await schedule.permit(user, _session(request), Action.MANAGE)
    key = parse_key(request.path_params["key"])
    data = await body(request)
    found = await schedule.move(permit, key, start=data.get("start"), reason=data.get("reason"))
    return JSON({"occurrence": _occurrence_wire(*found)})


# Registration


@api
async def register(request: Request) -> Response:
    user, _ = await signed_in(request)
    schedule = _schedule(request)
    permit = await schedule.permit(user, _session(request), Action.REGISTER)
    key = parse_key(request.path_params["key"])
    place, new = await schedule.register(permit, key)
    return JSON(place.to_wire(), status_code=201 if new else 200)


@api
async def unregister(request: Request) -> Response:
    user, _ = await signed_in(request)
    schedule = _schedule(request)
    permit = await schedule.permit(user, _session(request), Action.SEE)
    await schedule.unregister(permit, parse_key(request.path_params["key"]))
    return JSON({"status": "none"})


# Calendars


def _calendars(request: Request) -> WorkPool:
    calendars: WorkPool = request.app.state.calendars
    return calendars


@api
async def room_calendar(request: Request) -> Response:
    user, _ = await signed_in(request)
    room, entries = await _schedule(request).room_feed(user, _room(request))
    return await ics_response(_calendars(request), f"Hearth: {room.name}", entries)


@api
async def my_calendar(request: Request) -> Response:
    user, _ = await signed_in(request)
    entries = await _schedule(request).my_feed(user)
    return await ics_response(_calendars(request), "Hearth: my sessions", entries)


@api
async def calendar_token(request: Request) -> Response:
    user, _ = await signed_in(request)
    return JSON({"url": f"/api/calendar/{_feed_tokens(request).issue(user.id)}.ics"})


@api
async def token_calendar(request: Request) -> Response:
    user = await _feed_tokens(request).holder(request.path_params["token"], _hub(request).directory)
    entries = await _schedule(request).my_feed(user)
    return await ics_response(_calendars(request), "Hearth: my sessions", entries)


routes = [
    Route("/api/rooms/{room}/sessions", create_session, methods=["POST"]),
    Route("/api/rooms/{room}/sessions", list_sessions, methods=["GET"]),
    Route("/api/rooms/{room}/calendar.ics", room_calendar, methods=["GET"]),
    Route("/api/sessions/{session}", update_session, methods=["PATCH"]),
    Route("/api/sessions/{session}/occurrences", list_occurrences, methods=["GET"]),
    Route("/api/sessions/{session}/occurrences/{key}/cancel", cancel_occurrence, methods=["POST"]),
    Route("/api/sessions/{session}/occurrences/{key}/move", move_occurrence, methods=["POST"]),
    Route("/api/sessions/{session}/occurrences/{key}/registration", register, methods=["POST"]),
    Route("/api/sessions/{session}/occurrences/{key}/registration", unregister, methods=["DELETE"]),
    Route("/api/me/calendar.ics", my_calendar, methods=["GET"]),
    Route("/api/me/calendar-token", calendar_token, methods=["GET"]),
    Route("/api/calendar/{token}.ics", token_calendar, methods=["GET"]),
]
