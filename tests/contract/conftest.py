"""Backends under contract: every test here runs against the memory and the Redis backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from server.broker import Backend, open_broker


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
