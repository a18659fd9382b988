"""Real servers on free ports, real websocket clients, real HTTP."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import orjson
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from rooms.model import Role
from server.app import create_app
from server.hub import Hub
from server.serve import uvicorn_config
from server.settings import Limits, Settings

# One time unit for deadlines, scaled on slow machines (HEARTH_TEST_TIMEOUT_FACTOR).
UNIT = float(os.environ.get("HEARTH_TEST_TIMEOUT_FACTOR", "1"))
TIMEOUT = 10 * UNIT
JSON, MSGPACK = "hearth.v1.json", "hearth.v1.msgpack"
ENCODINGS = [JSON, MSGPACK]


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


# Figures a test measured (a latency under attack, a time to recover): printed together at
# the end of the run, so every run records them whether the tests pass or fail.
FIGURES: list[str] = []


def record_figure(test: str, what: str, value: float, unit: str) -> None:
    FIGURES.append(f"{test}: {what} {value:.1f} {unit}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("figures measured by the tests")
        for line in FIGURES:
            terminalreporter.write_line(line)


class HealthProbe:
    """Asks `/healthz` again and again while an attack runs: the slowest answer says how long
    the worker stopped serving everyone else. Use as `async with HealthProbe(url) as probe:`,
    then read `probe.worst` (seconds)."""

    def __init__(self, http_url: str, *, every: float = 0.02) -> None:
        self.http_url = http_url
        self.every = every
        self.worst = 0.0
        self.answers = 0
        self._task: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(base_url=http_url, timeout=TIMEOUT * 3)

    async def __aenter__(self) -> HealthProbe:
        await self._probe()  # the connection is open before the attack starts
        self.worst = 0.0
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._probe()  # one more after the attack: a stall still under way counts
        await self._http.aclose()

    async def _probe(self) -> None:
        started = time.perf_counter()
        r = await self._http.get("/healthz")
        assert r.status_code == 200, r.text
        self.worst = max(self.worst, time.perf_counter() - started)
        self.answers += 1

    async def _run(self) -> None:
        while True:
            await self._probe()
            await asyncio.sleep(self.every)


@dataclass
class Running:
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
    app = create_app(settings)
    # log_config None: the test process keeps pytest's logging (caplog) as it is.
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning", log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
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


@pytest.fixture(scope="session")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    """The shared server: production limits but a generous rate, for tests that send a lot."""
    running = await start_server(test_settings(tmp_path_factory.mktemp("hearth"), rate=2000.0, burst=2000.0))
    yield running
    await running.stop()


_names = itertools.count()


@dataclass
class Account:
    id: str
    username: str
    name: str
    role: str
    token: str


class Api:
    """HTTP calls as a client makes them."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.http = httpx.AsyncClient(base_url=running.http_url, timeout=TIMEOUT)

    async def signup(self, role: str = "patient", name: str | None = None) -> Account:
        username = f"user{next(_names)}{secrets.token_hex(2)}"
        body = {"username": username, "password": "correct horse", "display_name": name or username.title()}
        if role != "patient":
            body["role"] = role
        r = await self.http.post("/api/signup", json=body)
        assert r.status_code == 201, r.text
        data = r.json()
        return Account(data["user"]["id"], username, data["user"]["name"], data["user"]["role"], data["token"])

    async def staff(self, role: str = "facilitator") -> Account:
        """A staff account, made the way `hearth user create` makes it, then signed in over HTTP."""
        username = f"staff{next(_names)}{secrets.token_hex(2)}"
        await self.running.hub.accounts.create_user(username, "correct horse", username.title(), Role(role))
        r = await self.http.post("/api/login", json={"username": username, "password": "correct horse"})
        assert r.status_code == 200, r.text
        data = r.json()
        return Account(data["user"]["id"], username, data["user"]["name"], data["user"]["role"], data["token"])

    async def room(self, owner: Account, kind: str = "drop_in", name: str = "Room") -> str:
        r = await self.http.post("/api/rooms", json={"name": name, "kind": kind}, headers=auth(owner))
        assert r.status_code == 201, r.text
        room_id: str = r.json()["room"]["id"]
        return room_id

    async def add_member(self, actor: Account, room: str, user: Account) -> httpx.Response:
        return await self.http.post(f"/api/rooms/{room}/members", json={"user": user.id}, headers=auth(actor))

    async def aclose(self) -> None:
        await self.http.aclose()


def auth(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


@pytest.fixture
async def api(server: Running) -> AsyncIterator[Api]:
    client = Api(server)
    yield client
    await client.aclose()


class Client:
    """A websocket client as an app would write it: commands by id, events in a queue."""

    def __init__(self, ws: ClientConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.ids = itertools.count(1)
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read())

    def encode(self, message: dict[str, Any]) -> str | bytes:
        if self.encoding == MSGPACK:
            data: bytes = msgpack.packb(message, use_bin_type=True)
            return data
        return orjson.dumps(message).decode()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = msgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
                if self.encoding == MSGPACK:
                    assert isinstance(raw, bytes), "msgpack connections get binary frames"
                else:
                    assert isinstance(raw, str), "JSON connections get text frames"
                if "ev" in message:
                    self.events.put_nowait(message)
                elif message.get("id") in self.replies:
                    self.replies.pop(message["id"]).set_result(message)
                else:
                    self.events.put_nowait(message)  # a reply nobody waits for (id null)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set_result((self.ws.close_code, self.ws.close_reason or ""))

    async def raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a command; return the whole reply (`result` or `error`)."""
        cid = next(self.ids)
        future = self.replies[cid] = asyncio.get_running_loop().create_future()
        await self.ws.send(self.encode({"id": cid, "op": op, **args}))
        return await asyncio.wait_for(future, TIMEOUT)

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a command that must succeed; return its result."""
        reply = await self.request(op, **args)
        assert "result" in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    async def error(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a command that must fail; return its error."""
        reply = await self.request(op, **args)
        assert "error" in reply, reply
        error: dict[str, Any] = reply["error"]
        return error

    async def event(self, ev: str | None = None, *, room: str | None = None) -> dict[str, Any]:
        """The next event (of kind `ev`, in `room`), skipping others."""
        while True:
            event = await asyncio.wait_for(self.events.get(), TIMEOUT)
            if (ev is None or event.get("ev") == ev) and (room is None or event.get("room") == room):
                return event

    async def messages(self, room: str, count: int) -> list[dict[str, Any]]:
        """The next `count` durable events of `room`, in the order they arrived."""
        found = []
        while len(found) < count:
            event = await self.event(room=room)
            if "seq" in event:
                found.append(event)
        return found

    async def close_code(self) -> int | None:
        code, _ = await asyncio.wait_for(asyncio.shield(self.closed), TIMEOUT)
        return code

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


async def open_client(
    running: Running | ServerProcess, account: Account | None = None, encoding: str = JSON, **connect_args: Any
) -> Client:
    """Connect (and, given an account, authenticate) a client."""
    options: dict[str, Any] = {"compression": None, "open_timeout": TIMEOUT, **connect_args}
    ws = await connect(running.ws_url, subprotocols=[encoding], **options)  # type: ignore[list-item]
    client = Client(ws, encoding)
    if account is not None:
        result = await client.call("auth", token=account.token)
        assert result["user"]["id"] == account.id
    return client


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


class ServerProcess:
    """`hearth serve` in its own process, on a port it picks itself (port 0, read from its log)."""

    def __init__(self, data_dir: Path, *args: str, **env: str) -> None:
        self.data_dir = data_dir
        self.args = args  # more `hearth serve` options, such as --workers
        self.env = {
            **os.environ,
            "HEARTH_DATA_DIR": str(data_dir),
            "HEARTH_SECRET_KEY": "process-secret",
            "HEARTH_RATE": "5000",
            "HEARTH_BURST": "5000",
            "HEARTH_USER_RATE": "5000",
            "HEARTH_USER_BURST": "5000",
            # Every test client comes from 127.0.0.1: it is not one attacker.
            "HEARTH_MAX_CONNECTIONS_PER_ADDRESS": "100000",
            "HEARTH_SIGNIN_RATE": "1000",
            "HEARTH_SIGNIN_BURST": "1000",
            **env,
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.log: list[str] = []
        self._pump: asyncio.Task[None] | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def hearth(self, *args: str, stdin: bytes | None = None) -> str:
        """Run a `hearth` command against this server's database; return its output."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", *args, env=self.env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(stdin), 6 * TIMEOUT)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    async def start(self) -> ServerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server.cli", "serve", "--port", "0", *self.args, env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None
        async with asyncio.timeout(6 * TIMEOUT):
            while not self.port:
                line = (await self.proc.stderr.readline()).decode()
                if not line:
                    raise RuntimeError("hearth serve exited:\n" + "".join(self.log))
                self.log.append(line)
                if match := re.search(r"running on http://127\.0\.0\.1:(\d+)", line):
                    self.port = int(match.group(1))
        self._pump = asyncio.create_task(self._read_log())
        return self

    async def _read_log(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line.decode())

    async def signal(self, sig: int) -> int:
        """Send `sig` and wait for the process to exit; returns its exit code."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 6 * TIMEOUT)
        if self._pump is not None:
            await asyncio.wait_for(self._pump, TIMEOUT)
        self.port = 0
        return code

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            await self.signal(signal.SIGKILL)


@pytest.fixture
async def processes() -> AsyncIterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for proc in started:
        await proc.stop()


async def process_account(proc: ServerProcess, role: str = "patient") -> Account:
    """An account on a server process: staff through `hearth user create`, others by signup."""
    username = f"p{next(_names)}{secrets.token_hex(2)}"
    async with httpx.AsyncClient(base_url=proc.http_url, timeout=TIMEOUT) as http:
        if role in ("facilitator", "clinician", "admin"):
            await proc.hearth("user", "create", username, "--role", role, "--password-stdin", stdin=b"correct horse\n")
            r = await http.post("/api/login", json={"username": username, "password": "correct horse"})
        else:
            body = {"username": username, "password": "correct horse", "display_name": username, "role": role}
            r = await http.post("/api/signup", json=body)
        assert r.status_code in (200, 201), r.text
        data = r.json()
    return Account(data["user"]["id"], username, data["user"]["name"], data["user"]["role"], data["token"])


async def process_room(proc: ServerProcess, owner: Account, kind: str = "drop_in") -> str:
    async with httpx.AsyncClient(base_url=proc.http_url, timeout=TIMEOUT) as http:
        r = await http.post("/api/rooms", json={"name": "Group", "kind": kind}, headers=auth(owner))
        assert r.status_code == 201, r.text
        room: str = r.json()["room"]["id"]
        return room


PG_ADMIN_URL = os.environ.get("HEARTH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _in_own_loop(coro: Any) -> Any:
    """Run a coroutine to completion on a loop of its own (for a sync fixture)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(sql: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await admin.execute(sql)
    finally:
        await admin.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards. Under CI=true a missing
    PostgreSQL fails the test; elsewhere it skips it. (A sync fixture, so that async fixtures
    can ask for it by name.)"""
    name = f"hearth_test_{secrets.token_hex(6)}"
    try:
        _in_own_loop(_admin(f'CREATE DATABASE "{name}"'))
    except OSError as exc:
        need_service("PostgreSQL", PG_ADMIN_URL, exc)
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    _in_own_loop(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


REDIS_URL = os.environ.get("HEARTH_TEST_REDIS", "redis://127.0.0.1:6379/0")


def need_service(name: str, url: str, exc: BaseException) -> None:
    """A missing service fails the test under CI=true and skips it elsewhere."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{name} is required in CI and is not reachable at {url}: {exc}")
    pytest.skip(f"{name} not reachable at {url}")


@pytest.fixture
def redis_url() -> str:
    """The shared Redis; tests keep apart by key prefix (see `redis_prefix`)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        need_service("Redis", REDIS_URL, exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    return f"hearth-test:{secrets.token_hex(4)}:"


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
        import redis.asyncio as aioredis

        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", "0", "--unixsocket", str(self.socket), "--save", "", "--appendonly", "no",
            "--dir", str(self.directory), stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        client = aioredis.Redis.from_url(self.url)
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    await client.ping()
                    break
                except Exception:
                    await asyncio.sleep(0.05)
        await client.aclose()
        return self

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    import shutil

    if shutil.which("redis-server") is None:
        need_service("redis-server", "PATH", FileNotFoundError("redis-server"))
    redis = await RedisProcess(tmp_path).start()
    yield redis
    if redis.proc is not None and redis.proc.returncode is None:
        await redis.kill()
