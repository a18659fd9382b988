"""Running Hearth under uvicorn, with Hearth's limits and its graceful drain on SIGTERM."""

from __future__ import annotations

import gc
import socket

import uvicorn
from starlette.applications import Starlette

from server import logs
from server.app import Entry, create_app
from server.settings import Settings
from server.transport import HearthWebSocketProtocol
from server.workers import port_socket


class HearthServer(uvicorn.Server):
    """uvicorn's server, draining the hub before uvicorn closes the sockets.

    On SIGTERM: stop accepting connections, commit and acknowledge every pending send,
    then close each socket with 1012 so clients reconnect elsewhere and resume.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        hub = getattr(self.app.state, "hub", None)
        if hub is not None and not self.force_exit:
            await hub.drain()
        await super().shutdown(sockets)


def uvicorn_config(app: Starlette, settings: Settings, **overrides: object) -> uvicorn.Config:
    limits = settings.limits
    options: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "ws": HearthWebSocketProtocol,  # uvicorn's sans-I/O protocol with direct frame writes
        "interface": "asgi3",  # `Entry.__call__` returns its awaitable: no coroutine of its own
        "ws_max_size": limits.hard_frame,
        "ws_per_message_deflate": False,
        "ws_ping_interval": limits.ping_interval,
        "ws_ping_timeout": limits.ping_interval,
        "timeout_graceful_shutdown": 15,
        "lifespan": "on",
        # X-Forwarded-For and -Proto only from HEARTH_TRUSTED_PROXIES, and from nobody without
        # it: uvicorn's default believes any request from 127.0.0.1, so behind nothing at all
        # a client could name itself any address and get a fresh sign-in bucket each time.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies),
        "server_header": False,
        "log_config": logs.config(json=settings.log_json),
    }
    options.update(overrides)
    return uvicorn.Config(Entry(app), **options)  # type: ignore[arg-type]


# The cycle collector: a young collection after 10,000 net allocations of container objects
# instead of 700. A worker's heap is mostly its connections' long-lived state, and a full
# collection, which stops the worker while it scans all of it, runs once the middle
# generation has been collected ten times and the heap has grown by a quarter. At 700, a
# worker taking on 10,000 connections in 1,000 rooms made 12 full collections of up to half
# a second each (3.3-3.8 s in all); at 10,000 it makes none, and its longest pause is that
# of a middle collection, about 55 ms. (At 50,000 the one middle collection took 0.3 s.) A
# closed connection leaves no garbage in cycles (HearthWebSocketProtocol.connection_lost),
# so what is left for the collector to find is little and can wait.
GC_THRESHOLDS = (10_000, 10, 10)


def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM; with `reuse_port`, on a listening socket of this worker's own
    (see server.workers)."""
    gc.set_threshold(*GC_THRESHOLDS)
    app = create_app(settings)
    server = HearthServer(uvicorn_config(app, settings), app)
    if reuse_port:
        server.run(sockets=[port_socket(settings.host, settings.port, listening=True)])
    else:
        server.run()
