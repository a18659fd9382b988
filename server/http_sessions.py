"""The HTTP API of scheduled sessions: sessions, occurrences, registration, iCalendar feeds.

Calendar apps subscribe to a URL and cannot send an Authorization header, so each user also
has a calendar feed token: `c1.<user>.<HMAC-SHA256>` under a key of its own (derived from the
app secret with another label than sign-in tokens). It opens that user's .ics feed, read
only, and nothing else: it is never accepted as a Bearer token and a Bearer token is never
accepted in its place. This is the one place a secret travels in a URL, which is why it can
only read, and why the access log shows `/api/calendar/<token>.ics` instead of the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rooms import policy
from rooms.errors import BadRequest, Forbidden, NotFound, Unauthenticated
from rooms.model import MemberRole, Room, RoomId, RoomKind, User, UserId
from rooms.schedule import (
    LATEST,
    Occurrence,
    Session,
    SessionId,
    build_session,
    check_reason,
    check_window,
    parse_instant,
    parse_key,
    parse_local,
)
from server.auth import load_secret
from server.http import JSON, api, body, signed_in
from server.hub import Hub
from server.store.schedule import Attendance, SqlSchedule
from server.workpool import WorkPool

log = logging.getLogger("hearth.http")

# Windows
DEFAULT_WINDOW = timedelta(days=60)
FEED_PAST = timedelta(days=30)
FEED_AHEAD = timedelta(days=336)  # with FEED_PAST, one 366-day expansion
MAX_CO_FACILITATORS = 10
ICS_TYPE = "text/calendar; charset=utf-8"
# icalendar takes about 150 µs of CPU per event: a room with six daily sessions (2,046 events
# a year) took 1.05 s to render, and /healthz waited 0.97 s behind it. A feed keeps its first
# 1000 events by start and is rendered on a worker thread.
MAX_FEED_EVENTS = 1000

# Feed tokens: ASCII base64url only. hmac.compare_digest raises TypeError on a str with
# other characters, which answered a tampered link with a 500 instead of a 401.
_FEED_TOKEN = re.compile(r"c1\.([A-Za-z0-9_-]{1,200})\.([A-Za-z0-9_-]{43})")


class FeedTokens:
    """Read-only calendar feed tokens: `c1.<user id, base64url>.<HMAC-SHA256, base64url>`.

    They do not expire (a calendar subscription lives for years); changing HEARTH_SECRET_KEY
    invalidates all of them.
    """

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"hearth calendar feed v1" + secret).digest()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, user: UserId) -> str:
        payload = _b64(user.encode())
        return f"c1.{payload}.{self._sign(payload)}"

    def verify(self, token: str) -> UserId:
        invalid = Unauthenticated("This calendar link is not valid. Get a new one from Hearth.")
        match = _FEED_TOKEN.fullmatch(token)
        if match is None:
            raise invalid
        payload, signature = match.groups()
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            raise invalid
        try:
            return UserId(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode())
        except ValueError as exc:
            raise invalid from exc


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _HideFeedTokens(logging.Filter):
    """Keeps calendar feed tokens out of uvicorn's access log (its args: client, method, path, …)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > 2 and str(args[2]).startswith("/api/calendar/"):
            record.args = (*args[:2], "/api/calendar/<token>.ics", *args[3:])
        return True


logging.getLogger("uvicorn.access").addFilter(_HideFeedTokens())


# Wiring


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def _schedule(request: Request) -> SqlSchedule:
    schedule: SqlSchedule = request.app.state.schedule
    return schedule


def _feed_tokens(request: Request) -> FeedTokens:
    tokens: FeedTokens | None = getattr(request.app.state, "feed_tokens", None)
    if tokens is None:
        tokens = request.app.state.feed_tokens = FeedTokens(load_secret(_hub(request).settings))
    return tokens


def _now() -> datetime:
    return datetime.now(UTC)


# Access


async def _room(request: Request, user: User, room_id: str) -> tuple[Room, MemberRole | None]:
    """The room and the user's role in it, once they may see its schedule."""
    hub = _hub(request)
    room = await hub.directory.get_room(RoomId(room_id))
    if room is None:
        raise NotFound("There is no such room.")
    membership = await hub.directory.member_role(room.id, user.id)
    if not policy.can_see_schedule(user, room, membership):
        raise Forbidden("This group is for its members. Ask its facilitator to add you.")
    return room, membership


async def _session(request: Request, user: User) -> tuple[Session, MemberRole | None]:
    session = await _schedule(request).get(SessionId(request.path_params["session"]))
    if session is None:
        raise NotFound("There is no such session.")
    _, membership = await _room(request, user, session.room)
    return session, membership


async def _managed_session(request: Request) -> tuple[User, Session]:
    """The signed-in user and the session of the path, which they must be able to change."""
    user, _ = await signed_in(request)
    session, membership = await _session(request, user)
    if not policy.can_manage_session(user, session, membership):
        raise Forbidden("Only this session's facilitators can change it.")
    return user, session


async def _co_facilitators(request: Request, room: RoomId, lead: UserId, value: object) -> list[UserId]:
    """Staff members of the room, in the order given, without the lead or repeats."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest("`co_facilitators` must be a list of user ids.")
    if len(value) > MAX_CO_FACILITATORS:
        raise BadRequest(f"A session has at most {MAX_CO_FACILITATORS} co-facilitators.")
    directory = _hub(request).directory
    chosen: list[UserId] = []
    for user_id in dict.fromkeys(UserId(v) for v in value):
        if user_id == lead:
            continue
        user = await directory.get_user(user_id)
        if user is None or not user.role.is_staff or await directory.member_role(room, user_id) is None:
            raise BadRequest("Co-facilitators must be staff members of this room.")
        chosen.append(user_id)
    return chosen


async def _optional_body(request: Request) -> dict[str, Any]:
    return await body(request, optional=True)


# Sessions


@api
async def create_session(request: Request) -> Response:
    user, _ = await signed_in(request)
    hub = _hub(request)
    room = await hub.directory.get_room(RoomId(request.path_params["room"]))
    if room is None:
        raise NotFound("There is no such room.")
    if not policy.can_schedule(user, await hub.directory.member_role(room.id, user.id)):
        raise Forbidden("Only this room's facilitators can schedule sessions.")
    if room.kind is not RoomKind.GROUP:
        raise BadRequest("Only group rooms have scheduled sessions.")
    data = await body(request)
    co = await _co_facilitators(request, room.id, user.id, data.pop("co_facilitators", []))
    schedule = _schedule(request)
    session = build_session(id=schedule.new_id(), room=room.id, facilitators=(user.id, *co), fields=data)
    await schedule.create(session, user.id)
    return JSON({"session": session.to_wire()}, status_code=201)


@api
async def list_sessions(request: Request) -> Response:
    user, _ = await signed_in(request)
    room, _ = await _room(request, user, request.path_params["room"])
    sessions = await _schedule(request).list_room(room.id) if room.kind is RoomKind.GROUP else []
    return JSON({"sessions": [s.to_wire() for s in sessions]})


@api
async def update_session(request: Request) -> Response:
    user, session = await _managed_session(request)
    data = await body(request)
    lead = session.facilitators[0]
    co = list(session.facilitators[1:])
    if "co_facilitators" in data:
        co = await _co_facilitators(request, session.room, lead, data.pop("co_facilitators"))
    changed = build_session(id=session.id, room=session.room, facilitators=(lead, *co), fields=data, base=session)
    await _schedule(request).update(changed)
    return JSON({"session": changed.to_wire()})


# Occurrences


def _occurrence_wire(occurrence: Occurrence, attendance: Attendance) -> dict[str, Any]:
    return {
        **occurrence.to_wire(),
        "registered": attendance.registered,
        "waitlisted": attendance.waitlisted,
        "my_status": attendance.mine,
    }


async def _one_wire(request: Request, occurrence: Occurrence, user: User) -> dict[str, Any]:
    found = await _schedule(request).attendance(occurrence.session, [occurrence.key], user.id)
    return _occurrence_wire(occurrence, found[occurrence.key])


@api
async def list_occurrences(request: Request) -> Response:
    user, _ = await signed_in(request)
    session, _ = await _session(request, user)
    params = request.query_params
    start = parse_instant(params["from"], "from") if "from" in params else _now()
    end = parse_instant(params["to"], "to") if "to" in params else min(start + DEFAULT_WINDOW, LATEST)
    check_window(start, end)
    schedule = _schedule(request)
    found = await schedule.occurrences(session, start, end)
    attendance = await schedule.attendance(session.id, [o.key for o in found], user.id)
    return JSON({"occurrences": [_occurrence_wire(o, attendance[o.key]) for o in found]})


@api
async def cancel_occurrence(request: Request) -> Response:
    user, session = await _managed_session(request)
    key = parse_key(request.path_params["key"])
    data = await _optional_body(request)
    reason = check_reason(data.get("reason"))
    occurrence = await _schedule(request).change(session.id, key, user.id, cancel=True, reason=reason)
    return JSON({"occurrence": await _one_wire(request, occurrence, user)})


@api
async def move_occurrence(request: Request) -> Response:
    user, session = await _managed_session(request)
    key = parse_key(request.path_params["key"])
    data = await body(request)
    start = parse_local(data.get("start"), "start")
    reason = check_reason(data.get("reason"))
    occurrence = await _schedule(request).change(session.id, key, user.id, moved_to=start, reason=reason)
    return JSON({"occurrence": await _one_wire(request, occurrence, user)})


# Registration


@api
async def register(request: Request) -> Response:
    user, _ = await signed_in(request)
    session, membership = await _session(request, user)
    if membership is None:
        raise Forbidden("Only members of this group can register for its sessions.")
    key = parse_key(request.path_params["key"])
    place, new = await _schedule(request).register(session.id, key, user.id)
    answer: dict[str, Any] = {"status": place.status}
    if place.position is not None:
        answer["position"] = place.position
    return JSON(answer, status_code=201 if new else 200)


@api
async def unregister(request: Request) -> Response:
    user, _ = await signed_in(request)
    session, _ = await _session(request, user)
    key = parse_key(request.path_params["key"])
    await _schedule(request).unregister(session.id, key, user.id)
    return JSON({"status": "none"})


# Calendars


async def _ics(request: Request, name: str, entries: Iterable[tuple[Session, Occurrence, str | None]]) -> Response:
    """An iCalendar feed of the first MAX_FEED_EVENTS `entries` by start, rendered off the
    event loop on the calendars' pool: one at a time, four waiting, the next refused (429)."""
    chosen = sorted(entries, key=lambda e: (e[1].start, e[1].session))[:MAX_FEED_EVENTS]
    calendars: WorkPool = request.app.state.calendars
    body = await calendars.run(partial(_calendar, name, chosen))
    headers = {"Cache-Control": "private, max-age=300", "Referrer-Policy": "no-referrer"}
    return Response(body, media_type=ICS_TYPE, headers=headers)


def _calendar(name: str, entries: list[tuple[Session, Occurrence, str | None]]) -> bytes:
    """One VEVENT per occurrence, its UID stable for ever (session and key).

    Times carry the session's TZID, with a VTIMEZONE for each zone used, so calendar apps show
    the local time the group meets at; cancelled occurrences stay as STATUS:CANCELLED (an app
    then removes or strikes them), and a waitlisted place is TENTATIVE.
    """
    calendar = Calendar()
    calendar.add("prodid", "-//Hearth//Scheduled sessions//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", name)
    stamp = _now().replace(microsecond=0)
    first: date | None = None
    last: date | None = None
    for session, occurrence, status in entries:
        zone = ZoneInfo(occurrence.tz)
        event = Event()
        event.add("uid", f"{occurrence.session}-{occurrence.key:%Y%m%dT%H%M%SZ}@hearth")
        event.add("dtstamp", stamp)
        event.add("dtstart", occurrence.start.astimezone(zone))
        event.add("dtend", occurrence.end.astimezone(zone))
        event.add("summary", occurrence.title)
        if session.description:
            event.add("description", session.description)
        if occurrence.cancelled:
            event.add("status", "CANCELLED")
        else:
            event.add("status", "TENTATIVE" if status == "waitlisted" else "CONFIRMED")
        calendar.add_component(event)
        first = min(first or occurrence.start.date(), occurrence.start.date())
        last = max(last or occurrence.end.date(), occurrence.end.date())
    if first is not None and last is not None:
        calendar.add_missing_timezones(first_date=first - timedelta(days=366), last_date=last + timedelta(days=366))
    body: bytes = calendar.to_ical()
    return body


@api
async def room_calendar(request: Request) -> Response:
    user, _ = await signed_in(request)
    room, _ = await _room(request, user, request.path_params["room"])
    start = _now() - FEED_PAST
    schedule = _schedule(request)
    sessions = await schedule.list_room(room.id) if room.kind is RoomKind.GROUP else []
    entries: list[tuple[Session, Occurrence, str | None]] = []
    for session in sessions:
        for occurrence in await schedule.occurrences(session, start, start + FEED_PAST + FEED_AHEAD):
            entries.append((session, occurrence, None))
    return await _ics(request, f"Hearth: {room.name}", entries)


async def _my_calendar(request: Request, user: User) -> Response:
    """The occurrences `user` registered or waitlisted for, in rooms they may still see."""
    hub = _hub(request)
    start = _now() - FEED_PAST
    end = start + FEED_PAST + FEED_AHEAD
    entries: list[tuple[Session, Occurrence, str | None]] = []
    visible: dict[RoomId, bool] = {}
    for session, occurrence, status in await _schedule(request).registrations_of(user.id, start, end):
        if session.room not in visible:
            room = await hub.directory.get_room(session.room)
            membership = await hub.directory.member_role(session.room, user.id)
            visible[session.room] = room is not None and policy.can_see_schedule(user, room, membership)
        if visible[session.room]:
            entries.append((session, occurrence, status))
    return await _ics(request, "Hearth: my sessions", entries)


@api
async def my_calendar(request: Request) -> Response:
    user, _ = await signed_in(request)
    return await _my_calendar(request, user)


@api
async def calendar_token(request: Request) -> Response:
    user, _ = await signed_in(request)
    return JSON({"url": f"/api/calendar/{_feed_tokens(request).issue(user.id)}.ics"})


@api
async def token_calendar(request: Request) -> Response:
    user_id = _feed_tokens(request).verify(request.path_params["token"])
    user = await _hub(request).directory.get_user(user_id)
    if user is None:
        raise Unauthenticated("This calendar link is not valid. Get a new one from Hearth.")
    return await _my_calendar(request, user)


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
