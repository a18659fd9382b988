"""The services behind a server: PostgreSQL (a database of a test's own), the shared Redis,
a `RedisProcess` of a test's own to kill, and a `TcpProxy` to cut a service off without
touching it. A service that is missing skips the test, or fails it under CI=true.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.support.deadlines import TIMEOUT, eventually

PG_ADMIN_URL = os.environ.get("HEARTH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("HEARTH_TEST_REDIS", "redis://127.0.0.1:6379/0")


def need_service(name: str, url: str, exc: BaseException) -> NoReturn:
    """A missing service fails the test under CI=true and skips it elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{name} is required in CI and is not reachable at {url}: {exc}")
    pytest.skip(f"{name} not reachable at {url}")


# PostgreSQL


def create_database(name: str) -> str:
    """Create database `name` on the test PostgreSQL; return its URL. Synchronous, so that a
    sync fixture can call it (and async fixtures can ask for that fixture by name)."""
    try:
        _in_own_loop(_admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        need_service("PostgreSQL", PG_ADMIN_URL, exc)
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_database(name: str) -> None:
    _in_own_loop(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _in_own_loop(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to completion on a loop of its own (for a sync fixture)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


# Redis


def check_redis(url: str) -> None:
    """Skip (or, under CI, fail) the test unless Redis answers at `url`."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        need_service("Redis", url, exc)
    finally:
        client.close()


class RedisProcess:
    """A redis-server of a test's own, on a unix socket, to kill and restart."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "redis.sock"
        self.directory = directory
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    async def start(self) -> RedisProcess:
        """Start redis-server; return once it answers."""
        import redis.asyncio as aioredis

        if shutil.which("redis-server") is None:
            need_service("redis-server", "PATH", FileNotFoundError("redis-server"))
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", "0", "--unixsocket", str(self.socket), "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = aioredis.Redis.from_url(self.url)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except Exception:  # not listening yet
                return False

        try:
            await eventually(answers, within=TIMEOUT, every=0.05)
        finally:
            await client.aclose()
        return self

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await self.kill()


class TcpProxy:
    """A TCP relay in front of a real service, which a test can cut and restore (an outage
    without touching the service itself)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._pipes |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._pipes -= {writer, up_writer}

    async def cut(self) -> None:
        """Refuse new connections and break every open one, as a dead database host would."""
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            pipe.transport.abort()
        self._pipes.clear()

    async def restore(self) -> None:
        await self.start()  # same port: the address was the proxy's and is free again

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for pipe in list(self._pipes):
            pipe.transport.abort()
