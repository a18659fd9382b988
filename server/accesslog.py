"""The access log: one line per HTTP request, written by Hearth on the logger `hearth.access`.

A line holds the method, the route's TEMPLATE, the status and the time taken:
`GET /api/calendar/{token}.ics 200 8.4ms`. Never the path: a calendar feed's path holds its
token (`server.feed_tokens`), and other paths hold ids a template does without. uvicorn's own
access log is off (`server.serve`): it writes the path, and keeping the token out of its
lines meant rewriting its log records' arguments by position, which holds only for the
versions of uvicorn that order them that way. Websocket handshakes are not HTTP requests
here and get no line.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("hearth.access")

NO_ROUTE = "-"  # the template of a request no route took


class AccessLog:
    """Logs each HTTP request once it is answered. Plain ASGI, as `server.http.SecurityHeaders`:
    no task and no queue per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless an answer starts: an app that raises is answered 500 further out

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            took = (time.perf_counter() - started) * 1000
            log.info("%s %s %d %.1fms", scope["method"], template(scope), status, took)


def template(scope: Scope) -> str:
    """The path template of the route the router chose for this request (it records the
    route in the request's scope), or NO_ROUTE."""
    path: str | None = getattr(scope.get("route"), "path_format", None)
    return path or NO_ROUTE
