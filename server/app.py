"""create_app(settings): the ASGI app, and the lifespan that builds store, broker and hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from server.accesslog import AccessLog
from server.auth import Accounts, Passwords, Tokens, load_secret
from server.broker import open_broker, open_shared
from server.http import SecurityHeaders, routes
from server.http_communities import routes as community_routes
from server.http_safety import routes as safety_routes
from server.http_sessions import routes as session_routes
from server.hub import Hub
from server.scheduler import Scheduler
from server.settings import Settings
from server.store.communities import SqlAuditLog, SqlCommunities
from server.store.directory import SqlDirectory
from server.store.engine import open_engines
from server.store.migrate import upgrade
from server.store.outbox import SqlOutbox
from server.store.safety import SqlSafety
from server.store.schedule import SqlSchedule
from server.store.sql import SqlTranscriptStore
from server.workpool import WorkPool
from server.ws import Endpoint

log = logging.getLogger("hearth")

WEB_CLIENT = Path(__file__).resolve().parent.parent / "web_client"


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.check()  # `hearth serve` checked already; this is for an app served some other way
        engines = open_engines(settings.db_url, sqlite_synchronous=settings.sqlite_synchronous)
        if settings.development:
            await upgrade(engines)
        directory = SqlDirectory(engines)
        tokens = Tokens(load_secret(settings), ttl=settings.token_ttl)
        passwords = Passwords.for_settings(settings)
        accounts = Accounts(directory, tokens, passwords)
        broker = open_broker(settings.broker_url, prefix=settings.redis_prefix)
        await broker.start()
        shared = open_shared(broker, presence_ttl=settings.presence_ttl)
        store = SqlTranscriptStore(engines)
        communities = SqlCommunities(engines)
        await communities.load_bans()
        hub = Hub(
            settings,
            store=store,
            directory=directory,
            broker=broker,
            shared=shared,
            accounts=accounts,
            outbox=SqlOutbox(engines),
            communities=communities,
            audit=SqlAuditLog(engines),
            safety=SqlSafety(engines),
        )
        hub.start()
        schedule = app.state.schedule = SqlSchedule(engines)
        scheduler = Scheduler(hub, schedule, interval=settings.scheduler_interval)
        scheduler.start()
        app.state.hub = hub
        calendars = app.state.calendars = WorkPool(
            "calendar", workers=1, queue=4, busy="Calendars are busy right now. Try again in a moment."
        )
        await directory.purge_revoked()
        await directory.load_revoked()
        if not settings.development and not (settings.public_origin or settings.allowed_origins):
            log.warning("HEARTH_PUBLIC_ORIGIN is not set: browsers' websocket handshakes will be refused")
        log.info("hearth ready env=%s broker=%s", settings.env, settings.broker_url.split("://")[0])
        try:
            yield
        finally:
            await scheduler.close()
            await hub.drain()
            endpoint: Endpoint | None = getattr(app.state, "endpoint", None)  # (set by `hearth serve`)
            if endpoint is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(settings.drain_timeout):
                        await endpoint.close()
            await hub.close()
            await broker.aclose()
            await engines.dispose()
            passwords.close()
            calendars.close()

    app = Starlette(
        routes=[
            *routes,
            *session_routes,
            *community_routes,
            *safety_routes,
            Mount("/", StaticFiles(directory=WEB_CLIENT, html=True), name="web"),
        ],
        middleware=[Middleware(AccessLog), Middleware(SecurityHeaders)],
        lifespan=lifespan,
    )
    return app
