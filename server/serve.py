"""Running Hearth under uvicorn: its HTTP protocol behind Hearth's gate, Hearth's own
websocket protocol, and the graceful drain on SIGTERM (the app's lifespan shutdown)."""

from __future__ import annotations

import gc

import uvicorn
from starlette.applications import Starlette

from server import logs
from server.app import create_app
from server.gate import Gate
from server.settings import Settings
from server.transport import WebSockets
from server.workers import port_socket
from server.ws import Endpoint


def uvicorn_config(app: Starlette, settings: Settings, **overrides: object) -> uvicorn.Config:
    """uvicorn for Hearth: every connection through the gate (`server.gate`), and websockets
    on Hearth's own protocol (`server.transport`). The two are kept on `app.state`."""
    limits = settings.limits
    gate = app.state.gate = Gate(
        limit=limits.connections,
        per_address=limits.connections_per_address,
        request_timeout=limits.request_timeout,
        trusted=settings.trusted_proxies,
    )
    endpoint = app.state.endpoint = Endpoint(app, gate)
    websockets = WebSockets(
        endpoint, max_size=limits.auth_frame, ping_interval=limits.ping_interval, close_timeout=limits.close_timeout
    )
    options: dict[str, object] = {
        "host": settings.host,
        "port": settings.port,
        "http": gate.http,  # uvicorn's HTTP protocol behind the gate's guard
        "ws": websockets,  # the upgraded connections, on Hearth's own websocket protocol
        "timeout_graceful_shutdown": 15,
        "lifespan": "on",  # whose shutdown drains the hub: acks, then 1012 to every socket
        # X-Forwarded-For and -Proto only from HEARTH_TRUSTED_PROXIES, and from nobody without
        # it: uvicorn's default believes any request from 127.0.0.1, so behind nothing at all
        # a client could name itself any address and get a fresh sign-in bucket each time.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies),
        "server_header": False,
        "access_log": False,  # Hearth writes its own, with route templates (server.accesslog)
        "log_config": logs.config(json=settings.log_json),
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)  # type: ignore[arg-type]


# The cycle collector: a young collection after 10,000 net allocations of container objects
# instead of 700. A worker's heap is mostly its connections' long-lived state, and a full
# collection, which stops the worker while it scans all of it, runs once the middle
# generation has been collected ten times and the heap has grown by a quarter. At 700, a
# worker taking on 10,000 connections in 1,000 rooms made 12 full collections of up to half
# a second each (3.3-3.8 s in all); at 10,000 it makes none, and its longest pause is that
# of a middle collection, about 55 ms. (At 50,000 the one middle collection took 0.3 s.) A
# closed connection leaves no garbage in cycles (server.transport.Socket.connection_lost),
# so what is left for the collector to find is little and can wait.
GC_THRESHOLDS = (10_000, 10, 10)


def serve(settings: Settings, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM; with `reuse_port`, on a listening socket of this worker's own
    (see server.workers)."""
    gc.set_threshold(*GC_THRESHOLDS)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn_config(app, settings))
    if reuse_port:
        server.run(sockets=[port_socket(settings.host, settings.port, listening=True)])
    else:
        server.run()
