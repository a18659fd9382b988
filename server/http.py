"""The HTTP API: accounts, rooms, membership, health. JSON in and out."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rooms import fields
from rooms.errors import (
    BadRequest,
    Forbidden,
    HearthError,
    Internal,
    RateLimited,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from rooms.model import MemberId, MemberRole, Role, RoomId, RoomKind, User, UserId
from rooms.permissions import Op
from server.auth import Claims
from server.gate import address_key
from server.hub import Hub
from server.settings import Settings

log = logging.getLogger("hearth.http")
MAX_BODY = 16 * 1024
Handler = Callable[[Request], Awaitable[Response]]


class BodyTooLarge(TooLarge):
    """A body refused before it was read to its end: the answer closes the connection, or
    the server would go on reading (and discarding) whatever the client still sends."""


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def api(handler: Handler) -> Handler:
    """Turn HearthErrors into `{"error": {...}}` with the matching status."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except HearthError as exc:
            headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else {}
            if isinstance(exc, BodyTooLarge):
                headers["Connection"] = "close"
            return JSON({"error": exc.to_wire()}, status_code=exc.http_status, headers=headers)
        except Exception:
            # The route's template, never the path: a calendar feed's path holds its token.
            route = getattr(request.scope.get("route"), "path", "?")
            log.exception("http %s %s failed", request.method, route)
            return JSON({"error": Internal("Something went wrong on our side.").to_wire()}, status_code=500)

    return endpoint


async def body(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object (with `optional`, {} for an empty body), read up to
    MAX_BODY bytes and no further.

    A chunked body has no Content-Length, so the limit is counted while the body streams
    in: reading it whole first let 200 MiB sent to /api/login lift a worker's peak memory
    from 232 to 497 MB before the 413.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY:
        raise BodyTooLarge("The request body is too large.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge("The request body is too large.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if optional and not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("The body must be a JSON object.") from exc
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    return data


async def signed_in(request: Request) -> tuple[User, Claims]:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("Sign in first (Authorization: Bearer <token>).")
    return await _hub(request).accounts.authenticate(token.strip())


async def throttle(request: Request) -> None:
    """Sign-in attempts per client address: a short burst, then a trickle."""
    limits = _hub(request).limits
    await _take(request, f"signin:addr:{client_address(request)}", limits.signin_rate, limits.signin_burst)


async def throttle_account(request: Request, username: object) -> None:
    """Login attempts per account (the username asked for, whether it exists or not): from
    one address, `signin_account_rate` and `_burst`; from all addresses together, ten times
    the rate and three times the burst. A guesser spends its own address's share first, so
    one address cannot keep an account's owner out (it could keep 60 accounts out before,
    at its 1 attempt a second); many addresses still can, for the time they keep at it."""
    if isinstance(username, str):
        # Hashed: a username may be 16 KiB of anything, and the limiter needs no usernames.
        name = hashlib.sha256(username.lower().encode("utf-8", "surrogatepass")).hexdigest()[:32]
        limits = _hub(request).limits
        rate, burst = limits.signin_account_rate, limits.signin_account_burst
        await _take(request, f"signin:acct:{name}:{client_address(request)}", rate, burst)
        await _take(request, f"signin:acct:{name}", rate * 10, burst * 3)


async def _take(request: Request, key: str, rate: float, burst: float) -> None:
    """A token from the shared limiter, so every worker's attempts count (this worker's own
    while the shared one is away)."""
    wait = await _hub(request).quotas.take(key, rate, burst)
    if wait:
        raise RateLimited("Too many sign-in attempts. Wait a moment.", retry_after=wait)


def client_address(request: Request) -> str:
    """The address sign-ins are counted by: the peer's or, from a proxy listed in
    HEARTH_TRUSTED_PROXIES, the one it forwarded; an IPv6 client by its /64."""
    return address_key(request.client.host if request.client else "?")


def _session(hub: Hub, user: User, status: int = 200) -> Response:
    token, _ = hub.accounts.tokens.issue(user.id)
    return JSON({"token": token, "user": user.public()}, status_code=status)


@api
async def signup(request: Request) -> Response:
    hub = _hub(request)
    if not hub.settings.signup_open:
        raise Forbidden("Signup is closed here; ask an administrator for an account.")
    await throttle(request)
    data = await body(request)
    role = data.get("role", Role.PATIENT.value)
    if not isinstance(role, str) or role not in {r.value for r in Role}:
        raise BadRequest("Unknown role.")
    user = await hub.accounts.signup(
        data.get("username"), data.get("password"), _text(data, "display_name"), Role(role)
    )
    return _session(hub, user, 201)


@api
async def login(request: Request) -> Response:
    await throttle(request)
    data = await body(request)
    username = data.get("username")
    await throttle_account(request, username)
    hub = _hub(request)
    return _session(hub, await hub.accounts.login(username, data.get("password")))


@api
async def logout(request: Request) -> Response:
    hub = _hub(request)
    _, claims = await signed_in(request)
    await hub.accounts.logout(claims)
    await hub.notices.signed_out(claims.jti)
    return JSON({})


@api
async def me(request: Request) -> Response:
    user, _ = await signed_in(request)
    return JSON({"user": user.public()})


@api
async def list_rooms(request: Request) -> Response:
    user, _ = await signed_in(request)
    rooms = await _hub(request).directory.rooms_for(user)
    return JSON({"rooms": [r.public() for r in rooms]})


@api
async def create_room(request: Request) -> Response:
    user, _ = await signed_in(request)
    _hub(request).service.require_room_creator(user)  # before reading the body
    data = await body(request)
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in {k.value for k in RoomKind}:
        raise BadRequest("`kind` must be group or drop_in.")
    hub = _hub(request)
    community = await hub.members.home_for_room(user, data.get("community"))
    room = await hub.service.create_room(user, _text(data, "name"), RoomKind(kind), community.id)
    return JSON({"room": room.public()}, status_code=201)


@api
async def add_member(request: Request) -> Response:
    user, _ = await signed_in(request)
    data = await body(request)
    role = data.get("role", MemberRole.MEMBER.value)
    if not isinstance(role, str) or role not in {r.value for r in MemberRole}:
        raise BadRequest("`role` must be member or facilitator.")
    hub = _hub(request)
    # Refused before the person is looked up: whether an account or a card is in the community
    # is for those who may add members to know.
    room = await hub.service.managed_room(user, RoomId(request.path_params["room"]), Op.ROOM_MEMBERS)
    if "member" in data:
        who = await hub.members.member_in(room.community, MemberId(fields.string(data, "member", max_len=fields.ID)))
    else:
        who = await hub.members.card_of_account(user, room, UserId(fields.string(data, "user", max_len=fields.ID)))
    added = await hub.service.add_member(user, room.id, who.account, MemberRole(role))
    if added:
        await hub.notices.role_changed(room.id, who.account)
    return JSON({"member": who.public(), "role": role}, status_code=201 if added else 200)


@api
async def update_room(request: Request) -> Response:
    """PATCH a room: its `open_hours` (drop-in rooms; null for always open), `slow_mode`,
    `suspended` and its `notice`."""
    user, _ = await signed_in(request)
    data = await body(request)
    hub = _hub(request)
    room_id = RoomId(request.path_params["room"])
    moderation = {"slow_mode", "suspended", "notice"}
    if not data or not set(data) <= moderation | {"open_hours"} or ("open_hours" in data and set(data) & moderation):
        raise BadRequest("Change either `open_hours`, or `slow_mode` and `suspended` (with a `notice`).")
    if "open_hours" in data:
        room = await hub.service.set_open_hours(user, room_id, data["open_hours"])
        return JSON({"room": {**room.public(), "open_hours": room.open_hours}})
    room = await hub.service.moderate(
        user, room_id, slow_mode=data.get("slow_mode"), suspended=data.get("suspended"), notice=data.get("notice")
    )
    change: dict[str, Any] = {"slow_mode": room.slow_mode, "suspended": room.suspended is not None}
    if room.suspended is not None:
        change["notice"] = room.suspended
    await hub.audit.record(user.id, "room.moderate", community=room.community, room=room.id, reason=room.suspended)
    await hub.notices.room_changed(room.id, {"ev": "room", "room": room.id, **change})
    return JSON({"room": room.public()})


@api
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of this worker's metrics, for whoever shows
    HEARTH_METRICS_TOKEN as a Bearer token. Without it: to loopback clients in development,
    to nobody otherwise (the figures name the pid, memory, and what every op is doing)."""
    hub = _hub(request)
    _metrics_reader(request, hub.settings)
    hub.metrics.connections.set(len(hub.clients.registry))
    hub.metrics.rooms.set(len(hub.fanout.feeds))
    hub.metrics.broker_up.set(1 if hub.health.broker.healthy else 0)
    hub.metrics.broker_reconnects.set(getattr(hub.health.broker, "reconnects", 0))
    return Response(hub.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def _metrics_reader(request: Request, settings: Settings) -> None:
    if settings.metrics_token:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = settings.metrics_token.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise Unauthenticated("Metrics need the Bearer token set in HEARTH_METRICS_TOKEN.")
        return
    if settings.development and _loopback(request):
        return
    raise Forbidden("Set HEARTH_METRICS_TOKEN to read metrics.")


def _loopback(request: Request) -> bool:
    try:
        return request.client is not None and ipaddress.ip_address(request.client.host).is_loopback
    except ValueError:
        return False


@api
async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


@api
async def readyz(request: Request) -> Response:
    """200 `ready`; 200 `degraded` while the broker is down (sends still commit, fan-out to other
    workers waits); 503 while the store is down or the worker is draining."""
    hub = _hub(request)
    checks = {"store": "ok", "broker": "ok" if hub.health.broker.healthy else "down"}
    try:
        await hub.store.ping()
    except Unavailable:
        checks["store"] = "down"
    if checks["store"] == "down" or hub.draining:
        return JSON({"status": "unavailable", "checks": checks}, status_code=503)
    return JSON({"status": "degraded" if hub.health.degraded else "ready", "checks": checks})


def _text(data: dict[str, Any], name: str) -> str:
    """A string field of a body (its own limits are the domain's: a name over 80 characters
    is `too_large`)."""
    return fields.string(data, name, max_len=MAX_BODY)


# What every HTTP response says about itself. The web client is `index.html`, one module
# script and one stylesheet, all from this origin, with no inline script, style or handler;
# it talks to this origin only (fetch, and /ws: 'self' covers ws: and wss: on the same host).
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors, for browsers that predate it
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response. Plain ASGI: Starlette's
    BaseHTTPMiddleware would run each request in a task of its own and stream every response
    body through a queue."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


routes = [
    Route("/api/signup", signup, methods=["POST"]),
    Route("/api/login", login, methods=["POST"]),
    Route("/api/logout", logout, methods=["POST"]),
    Route("/api/me", me, methods=["GET"]),
    Route("/api/rooms", list_rooms, methods=["GET"]),
    Route("/api/rooms", create_room, methods=["POST"]),
    Route("/api/rooms/{room}", update_room, methods=["PATCH"]),
    Route("/api/rooms/{room}/members", add_member, methods=["POST"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
