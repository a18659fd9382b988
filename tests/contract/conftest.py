"""Backends under contract: every test here runs against the memory and the Redis backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.broker import Backend, Shared, open_broker, open_shared

TTL = 0.5  # seconds a presence lease or connection lease lives without a heartbeat


@pytest.fixture(params=["memory", "redis"])
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        backend = open_broker("memory://")
    else:
        url = request.getfixturevalue("redis_url")
        backend = open_broker(url, prefix=request.getfixturevalue("redis_prefix"))
    await backend.start()
    assert backend.healthy
    yield backend
    await backend.aclose()


@pytest.fixture
def shared(broker: Backend) -> Shared:
    return open_shared(broker, presence_ttl=TTL)
