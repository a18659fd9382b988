"""Servers in the test's own process: `test_settings` for one, `start_server` and `serving`
to run it on a port it binds itself, and `Running`, what a test reads off it.

Such a server shares the test's event loop. Where timing or a blocked loop is the point,
run `hearth serve` in a process of its own instead (`tests.support.processes`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from server.app import create_app
from server.hub import Hub
from server.serve import uvicorn_config
from server.settings import Limits, Settings
from tests.support.api import Api


def test_settings(data_dir: Path, **limits: Any) -> Settings:
    """Settings for a test server: production limits unless a test says otherwise; cheap hashes,
    and sign-ins and connections per address unthrottled because every test client comes
    from 127.0.0.1."""
    limits = {"signin_rate": 1000.0, "signin_burst": 1000.0, "connections_per_address": 100_000, **limits}
    if "rate" in limits:  # a test that raises the connection rate means the user's too
        limits = {"user_rate": limits["rate"], "user_burst": limits.get("burst", limits["rate"]), **limits}
    return Settings(
        port=0,
        data_dir=data_dir,
        secret_key="test-secret-" + secrets.token_hex(8),
        argon2_memory_kib=1024,
        argon2_time_cost=1,
        scheduler_interval=0.2,
        limits=Limits(**limits),
    )


test_settings.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


@dataclass
class Running:
    """A server started by `start_server`: where it listens, and its app and hub."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    settings: Settings

    @property
    def port(self) -> int:
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app(self) -> Any:
        return self.server.config.app

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.state.hub
        return hub

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def start_server(settings: Settings) -> Running:
    """Start a server on a free port; return once it listens."""
    app = create_app(settings)
    # log_config None: the test process keeps pytest's logging (caplog) as it is.
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning", log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn sets the flag once bound; it has no event to wait on
        if task.done():
            task.result()
            raise RuntimeError("server stopped before it started")
        await asyncio.sleep(0.01)
    return Running(server, task, settings)


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Running, Api]]:
    """A server of a test's own, with an HTTP client for it; both stopped at the end."""
    running = await start_server(settings)
    api = Api(running)
    try:
        yield running, api
    finally:
        await api.aclose()
        await running.stop()
