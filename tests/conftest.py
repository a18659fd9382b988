"""Fixtures and hooks: the shared server and its HTTP client, the clients and server
processes a test opens, PostgreSQL and Redis, and the summary of measured figures.

What they are made of lives in `tests/support/`, a module per concept; every name a test
imports is importable from here too, as tests have always imported them.
"""

# ruff: noqa: E402 (the helpers are imported after asking pytest to rewrite their asserts)

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

# A failed assert in a helper (a reply that is not a result, a status that is not 201) is
# explained as one in a test is.
pytest.register_assert_rewrite("tests.support")

from tests.support.api import Account, Api, auth
from tests.support.client import ENCODINGS, JSON, MSGPACK, Client, open_client
from tests.support.deadlines import TIMEOUT, UNIT, eventually
from tests.support.measurement import FIGURES, HealthProbe, record_figure
from tests.support.processes import ServerProcess, process_account, process_room
from tests.support.servers import Running, serving, start_server, test_settings
from tests.support.services import (
    PG_ADMIN_URL,
    REDIS_URL,
    RedisProcess,
    TcpProxy,
    check_redis,
    create_database,
    drop_database,
    need_service,
)

__all__ = [
    "ENCODINGS",
    "JSON",
    "MSGPACK",
    "PG_ADMIN_URL",
    "REDIS_URL",
    "TIMEOUT",
    "UNIT",
    "Account",
    "Api",
    "Client",
    "HealthProbe",
    "RedisProcess",
    "Running",
    "ServerProcess",
    "TcpProxy",
    "auth",
    "eventually",
    "need_service",
    "open_client",
    "process_account",
    "process_room",
    "record_figure",
    "serving",
    "start_server",
    "test_settings",
]


# Servers


@pytest.fixture(scope="session")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    """The shared server: production limits but a generous rate, for tests that send a lot."""
    running = await start_server(test_settings(tmp_path_factory.mktemp("hearth"), rate=2000.0, burst=2000.0))
    yield running
    await running.stop()


@pytest.fixture
async def processes() -> AsyncIterator[list[ServerProcess]]:
    """Server processes a test starts; killed at the end."""
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        await proc.stop()


# Clients


@pytest.fixture
async def api(server: Running) -> AsyncIterator[Api]:
    client = Api(server)
    yield client
    await client.aclose()


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Clients a test opens; closed at the end."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        await client.close()


@pytest.fixture(params=ENCODINGS)
def encoding(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


# Services


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards. Under CI=true a missing
    PostgreSQL fails the test; elsewhere it skips it. (A sync fixture, so that async fixtures
    can ask for it by name.)"""
    name = f"hearth_test_{secrets.token_hex(6)}"
    yield create_database(name)
    drop_database(name)


@pytest.fixture
def redis_url() -> str:
    """The shared Redis; tests keep apart by key prefix (see `redis_prefix`)."""
    check_redis(REDIS_URL)
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    return f"hearth-test:{secrets.token_hex(4)}:"


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    """A redis-server of the test's own, to kill and restart; stopped at the end."""
    redis = await RedisProcess(tmp_path).start()
    yield redis
    await redis.stop()


# Figures


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the figures the tests measured, together, at the end of the run."""
    if FIGURES:
        terminalreporter.section("figures measured by the tests")
        for line in FIGURES:
            terminalreporter.write_line(line)
