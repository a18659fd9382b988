"""The HTTP side under attack: bodies, sign-in floods, tokens, headers, origins, files and
configuration. Each test asserts what the attacker sees and, where time or memory is the
point, that the worker kept serving everyone else."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import secrets
import socket
import stat
import sys
import time
from pathlib import Path

import httpx
import pytest

from server.settings import Settings
from server.store.engine import open_engines
from server.store.migrate import upgrade
from tests.conftest import (
    TIMEOUT,
    Api,
    HealthProbe,
    Running,
    ServerProcess,
    auth,
    open_client,
    process_account,
    record_figure,
    serving,
    test_settings,
)

MIB = 1024 * 1024


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


async def chunked_flood(port: int, path: str, total: int, chunk: int = 64 * 1024) -> tuple[str, int]:
    """POST `total` bytes to `path` in chunks (no Content-Length), as an attacker would: it
    keeps sending whatever the answer, until it has sent them all or the server hangs up.
    Returns the status line of the answer and how many bytes went out.

    On a socket of its own rather than asyncio's streams: a write that meets the server's
    reset would make the stream drop an answer already waiting in the kernel."""
    loop = asyncio.get_running_loop()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setblocking(False)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        await loop.sock_sendall(sock, (head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        received = bytearray()

        async def read_status() -> None:
            while b"\r\n" not in received and (data := await loop.sock_recv(sock, 65536)):
                received.extend(data)

        reading = asyncio.create_task(read_status())
        piece = f"{chunk:x}\r\n".encode() + b" " * chunk + b"\r\n"
        sent = 0
        try:
            while sent < total:
                await loop.sock_sendall(sock, piece)
                sent += chunk
            await loop.sock_sendall(sock, b"0\r\n\r\n")
        except ConnectionError:
            pass  # the server answered and hung up
        await asyncio.wait_for(reading, 6 * TIMEOUT)
    return bytes(received).split(b"\r\n", 1)[0].decode(), sent


# Bodies


async def test_a_chunked_body_flood_is_refused_at_the_limit_without_growing_the_worker(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """200 MiB sent chunked to /api/login (no Content-Length, no sign-in) get 413 once the
    body passes 16 KiB and the connection is closed, so the worker reads no further; its
    peak memory stays put, and /healthz keeps answering meanwhile."""
    proc = await ServerProcess(tmp_path).start()
    processes.append(proc)
    assert proc.proc is not None
    async with HealthProbe(proc.http_url) as probe:
        before = peak_rss_mib(proc.proc.pid)
        started = time.perf_counter()
        status, sent = await chunked_flood(proc.port, "/api/login", 200 * MIB)
        took = time.perf_counter() - started
        grown = peak_rss_mib(proc.proc.pid) - before
    record_figure("chunked body flood", "peak memory growth", grown, "MiB")
    record_figure("chunked body flood", "sent before the server hung up", sent / MIB, "MiB")
    record_figure("chunked body flood", "time to the 413", took * 1000, "ms")
    record_figure("chunked body flood", "slowest /healthz", probe.worst * 1000, "ms")
    assert status == "HTTP/1.1 413 Request Entity Too Large", status
    assert grown < 20, f"the worker's peak memory grew by {grown:.0f} MiB"
    assert sent < 32 * MIB, f"the server took {sent / MIB:.0f} MiB before hanging up"
    assert probe.worst < 0.5


# Sign-in


async def login(http: httpx.AsyncClient, username: str, password: str = "not the password", **headers: str) -> int:
    r = await http.post("/api/login", json={"username": username, "password": password}, headers=headers)
    if r.status_code == 429:
        assert r.json()["error"]["code"] == "rate_limited" and r.json()["error"]["retry_after"] > 0
        assert int(r.headers["retry-after"]) >= 1
    return r.status_code


async def test_a_forged_forwarded_for_header_does_not_buy_a_fresh_sign_in_bucket(tmp_path: Path) -> None:
    """With no trusted proxy, X-Forwarded-For is ignored: naming another address on each
    login still spends the one bucket of the real peer."""
    async with serving(test_settings(tmp_path, signin_rate=0.001, signin_burst=3)) as (_, api):
        answers = [await login(api.http, f"nobody{i}", **{"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(6)]
    assert answers == [401, 401, 401, 429, 429, 429]


async def test_a_trusted_proxys_forwarded_address_is_counted_by_itself(tmp_path: Path) -> None:
    """Behind a proxy listed in HEARTH_TRUSTED_PROXIES, each forwarded address has a bucket
    of its own (and the proxy's own address none)."""
    settings = test_settings(tmp_path, signin_rate=0.001, signin_burst=3).with_(trusted_proxies=("127.0.0.0/8",))
    async with serving(settings) as (_, api):
        first = [await login(api.http, f"nobody{i}", **{"X-Forwarded-For": "198.51.100.7"}) for i in range(4)]
        other = await login(api.http, "nobody9", **{"X-Forwarded-For": "198.51.100.8"})
    assert first == [401, 401, 401, 429] and other == 401


async def test_concurrent_wrong_passwords_for_one_account_stop_at_its_burst(tmp_path: Path) -> None:
    """24 wrong passwords for one account at once, from as many addresses: the account's
    burst from all addresses together (3 x 5) are checked, the rest get 429 with
    retry_after, the right password too. (Room for all 24 in the password pool's queue:
    this is about the account's limit, not the pool's.)"""
    settings = test_settings(tmp_path, signin_account_rate=0.001, signin_account_burst=5, hash_queue=64)
    settings = settings.with_(trusted_proxies=("127.0.0.1",))
    async with serving(settings) as (_, api):
        account = await api.signup()
        answers = await asyncio.gather(
            *(login(api.http, account.username.upper(), **{"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(24))
        )
        assert sorted(answers) == [401] * 15 + [429] * 9
        assert await login(api.http, account.username, "correct horse", **{"X-Forwarded-For": "198.51.100.7"}) == 429
        assert await login(api.http, "someone-else", "correct horse") == 401  # other accounts are not held up


async def test_one_address_guessing_an_account_does_not_keep_its_owner_out(tmp_path: Path) -> None:
    """Ten wrong passwords from one address stop at that address's burst for the account
    (5); the owner, from another address, signs in."""
    settings = test_settings(tmp_path, signin_account_rate=0.001, signin_account_burst=5)
    settings = settings.with_(trusted_proxies=("127.0.0.1",))
    async with serving(settings) as (_, api):
        account = await api.signup()
        guesses = [await login(api.http, account.username, **{"X-Forwarded-For": "203.0.113.9"}) for _ in range(10)]
        assert guesses == [401] * 5 + [429] * 5
        assert await login(api.http, account.username, "correct horse", **{"X-Forwarded-For": "198.51.100.7"}) == 200


async def test_an_accounts_sign_in_limit_counts_attempts_on_every_worker(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """Two workers on one Redis: attempts on one account, alternating between them, stop at
    the account's burst (4) in all, not per worker."""
    answers = []
    base = test_settings(tmp_path / "a", signin_account_rate=0.001, signin_account_burst=4)
    base = base.with_(broker_url=redis_url, redis_prefix=redis_prefix)
    async with serving(base) as (_, one), serving(base.with_(data_dir=tmp_path / "b")) as (_, two):
        for i in range(10):
            answers.append(await login((one, two)[i % 2].http, "maya"))
    assert answers == [401] * 4 + [429] * 6


async def test_a_sign_in_flood_is_shed_with_429_and_the_worker_keeps_serving(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """40 wrong passwords at once for one account, from 40 addresses behind a proxy, on a
    worker with real argon2 costs and no sign-in limit that would stop them first: 2 checks
    run and 8 wait, the rest get 429 at once rather than a place in a queue; /healthz keeps
    answering meanwhile, and the worker's memory grows by a few checks' worth at most."""
    unlimited = {f"HEARTH_SIGNIN_{what}": "1000" for what in ("RATE", "BURST", "ACCOUNT_RATE", "ACCOUNT_BURST")}
    proc = await ServerProcess(tmp_path, HEARTH_TRUSTED_PROXIES="127.0.0.1", **unlimited).start()
    processes.append(proc)
    assert proc.proc is not None
    account = await process_account(proc)
    async with httpx.AsyncClient(base_url=proc.http_url, timeout=6 * TIMEOUT) as http:

        async def timed(i: int) -> tuple[int, float]:
            started = time.perf_counter()
            status = await login(http, account.username, **{"X-Forwarded-For": f"203.0.113.{i}"})
            return status, time.perf_counter() - started

        async with HealthProbe(proc.http_url) as probe:
            before = peak_rss_mib(proc.proc.pid)
            answers = await asyncio.gather(*(timed(i) for i in range(40)))
            grown = peak_rss_mib(proc.proc.pid) - before
    checked = [took for status, took in answers if status == 401]
    shed = [took for status, took in answers if status == 429]
    record_figure("sign-in flood", "logins checked of 40", len(checked), "")
    record_figure("sign-in flood", "slowest checked login", max(checked) * 1000, "ms")
    record_figure("sign-in flood", "slowest 429", max(shed or [0]) * 1000, "ms")
    record_figure("sign-in flood", "peak memory growth", grown, "MiB")
    record_figure("sign-in flood", "slowest /healthz", probe.worst * 1000, "ms")
    assert len(checked) + len(shed) == 40 and len(shed) >= 20, (len(checked), len(shed))
    assert max(shed) < 2.0
    assert probe.worst < 0.5
    assert grown < 3 * 64, f"the worker's peak memory grew by {grown:.0f} MiB"


async def test_a_wrong_password_takes_as_long_for_an_unknown_user_as_for_a_known_one(tmp_path: Path) -> None:
    """With a real argon2 cost, a failed login for a username nobody has takes at least half
    as long as one for an existing account (it checks a dummy hash): its time tells nothing."""
    settings = test_settings(tmp_path).with_(argon2_memory_kib=32768, argon2_time_cost=2)
    async with serving(settings) as (_, api):
        account = await api.signup()
        assert await login(api.http, "warm-up") == 401

        async def timed(username: str) -> float:
            started = time.perf_counter()
            assert await login(api.http, username) == 401
            return time.perf_counter() - started

        known, unknown = [], []
        for i in range(5):
            known.append(await timed(account.username))
            unknown.append(await timed(f"nobody-{i}"))
    known_ms, unknown_ms = sorted(known)[2] * 1000, sorted(unknown)[2] * 1000
    record_figure("login timing", "wrong password, known user (median)", known_ms, "ms")
    record_figure("login timing", "wrong password, unknown user (median)", unknown_ms, "ms")
    assert unknown_ms >= known_ms / 2


# Tokens


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """Every line the server's loggers wrote, tracebacks included."""
    server_side = ("hearth", "uvicorn", "starlette")
    records = [r for r in caplog.records if r.name.startswith(server_side)]
    return "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in records)


async def test_a_bearer_token_with_a_non_ascii_signature_is_a_401(tmp_path: Path) -> None:
    """A token whose signature holds a non-ASCII character is refused like any bad token."""
    async with serving(test_settings(tmp_path)) as (_, api):
        account = await api.signup()
        forged = account.token.rsplit(".", 1)[0] + ".\u00e9t\u00e9"
        r = await api.http.get("/api/me", headers={"Authorization": f"Bearer {forged}".encode()})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


async def test_a_websocket_auth_token_with_a_non_ascii_signature_closes_with_4401(tmp_path: Path) -> None:
    """The same token on the websocket gets `unauthenticated` and close 4401, not 1011."""
    async with serving(test_settings(tmp_path)) as (running, api):
        account = await api.signup()
        client = await open_client(running)
        for forged in (account.token.rsplit(".", 1)[0] + ".\u00e9t\u00e9", "v1.\u00e9.\u00e9"):
            error = await client.error("auth", token=forged)
            assert error["code"] == "unauthenticated"
            assert await client.close_code() == 4401
            client = await open_client(running)
        await client.close()


async def test_a_calendar_link_with_a_non_ascii_signature_is_a_401_and_logs_no_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A forged feed token in the URL gets 401, and no log line carries the URL or the token."""
    caplog.set_level(logging.DEBUG)
    async with serving(test_settings(tmp_path)) as (_, api):
        account = await api.signup()
        url = (await api.http.get("/api/me/calendar-token", headers=_bearer(api, account.token))).json()["url"]
        token = url.removeprefix("/api/calendar/").removesuffix(".ics")
        forged = token.rsplit(".", 1)[0] + ".s\u00e9cret"
        async with httpx.AsyncClient(base_url=api.running.http_url) as bare:
            r = await bare.get(f"/api/calendar/{forged}.ics")
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    logged = server_log(caplog)
    for secret in (forged, token.split(".")[1], "s\u00e9cret", account.token):
        assert secret not in logged


def _bearer(api: Api, token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Metrics


async def migrated(settings: Settings) -> Settings:
    """`settings` with its database migrated, as `hearth migrate` does before a production start."""
    engines = open_engines(settings.db_url)
    try:
        await upgrade(engines)
    finally:
        await engines.dispose()
    return settings


async def test_metrics_need_the_metrics_token_when_one_is_set(tmp_path: Path) -> None:
    """With HEARTH_METRICS_TOKEN, /metrics answers 401 without it or with another token, and
    serves Prometheus text to a Bearer of the right one."""
    async with serving(test_settings(tmp_path).with_(metrics_token="scrape-7f3a")) as (_, api):
        for headers in ({}, {"Authorization": "Bearer scrape-7f3b"}, {"Authorization": "Basic scrape-7f3a"}):
            r = await api.http.get("/metrics", headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
        r = await api.http.get("/metrics", headers={"Authorization": "Bearer scrape-7f3a"})
        assert r.status_code == 200 and "hearth_connections" in r.text


async def test_without_a_metrics_token_metrics_are_refused_in_production(tmp_path: Path) -> None:
    """In production with no HEARTH_METRICS_TOKEN, /metrics is refused even from loopback."""
    async with serving(await migrated(test_settings(tmp_path).with_(env="production"))) as (_, api):
        r = await api.http.get("/metrics")
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert (await api.http.get("/healthz")).status_code == 200


async def test_without_a_metrics_token_metrics_are_for_loopback_in_development(tmp_path: Path) -> None:
    """In development with no token, a loopback client reads /metrics; a client a trusted
    proxy forwards from elsewhere is refused."""
    async with serving(test_settings(tmp_path).with_(trusted_proxies=("127.0.0.1",))) as (_, api):
        assert (await api.http.get("/metrics")).status_code == 200
        r = await api.http.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


# Origin


async def handshake(port: int, *, origin: str, host: str) -> int:
    """The status a websocket handshake to /ws gets with this Origin and Host (101: accepted)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: hearth.v1.json",
        f"Origin: {origin}",
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    status = await asyncio.wait_for(reader.readline(), TIMEOUT)
    writer.close()
    return int(status.split()[1])


async def test_in_production_the_origin_is_checked_against_the_public_origin_not_the_host(tmp_path: Path) -> None:
    """A page on a rebound domain sends its own name as Origin and Host: refused in
    production (403), where only HEARTH_PUBLIC_ORIGIN and HEARTH_ALLOWED_ORIGINS count."""
    settings = test_settings(tmp_path).with_(
        env="production", public_origin="https://groups.example.org", allowed_origins=("https://app.example.org",)
    )
    async with serving(await migrated(settings)) as (running, _):
        port = running.port
        assert await handshake(port, origin="https://evil.example", host="evil.example") == 403
        assert await handshake(port, origin=f"http://127.0.0.1:{port}", host=f"127.0.0.1:{port}") == 403
        assert await handshake(port, origin="https://groups.example.org", host="groups.example.org") == 101
        assert await handshake(port, origin="https://GROUPS.example.org/", host="10.0.0.5:8000") == 101
        assert await handshake(port, origin="https://app.example.org", host="groups.example.org") == 101


async def test_in_development_an_origin_on_the_requests_own_host_is_allowed(tmp_path: Path) -> None:
    """In development the web client served by Hearth itself connects without any setting."""
    async with serving(test_settings(tmp_path)) as (running, _):
        port = running.port
        assert await handshake(port, origin=f"http://127.0.0.1:{port}", host=f"127.0.0.1:{port}") == 101
        assert await handshake(port, origin="https://evil.example", host=f"127.0.0.1:{port}") == 403


# Names


async def name_answers(api: Api, name: str) -> list[httpx.Response]:
    """The answers to `name` as a display name (signup), a room name and a session title."""
    staff = await api.staff()
    room = await api.room(staff, kind="group")
    signup = {"username": f"n{secrets.token_hex(4)}", "password": "correct horse", "display_name": name}
    session = {"title": name, "start": "2027-03-04T19:00", "tz": "Europe/London", "duration_minutes": 60}
    return [
        await api.http.post("/api/signup", json=signup),
        await api.http.post(
            "/api/rooms", json={"name": name, "kind": "group", "community": await api.community()}, headers=auth(staff)
        ),
        await api.http.post(f"/api/rooms/{room}/sessions", json=session, headers=auth(staff)),
    ]


@pytest.mark.parametrize(
    "char",
    [
        pytest.param("\r", id="carriage return"),
        pytest.param("\x85", id="C1 next line"),
        pytest.param("\x9b", id="C1 control sequence introducer"),
        pytest.param("\u202e", id="right-to-left override"),
        pytest.param("\u202a", id="left-to-right embedding"),
        pytest.param("\u202c", id="pop directional formatting"),
        pytest.param("\u2067", id="right-to-left isolate"),
        pytest.param("\u2069", id="pop directional isolate"),
        pytest.param("\u200f", id="right-to-left mark"),
        pytest.param("\u061c", id="arabic letter mark"),
        pytest.param("\u200b", id="zero-width space"),
        pytest.param("\u2060", id="word joiner"),
        pytest.param("\ufeff", id="byte order mark"),
        pytest.param("\u00ad", id="soft hyphen"),
        pytest.param("\U000e0041", id="tag character"),
        pytest.param("\u2028", id="line separator"),
        pytest.param("\u2029", id="paragraph separator"),
    ],
)
async def test_a_name_with_a_control_or_format_character_is_a_bad_request(server: Running, api: Api, char: str) -> None:
    """Display names, room names and session titles refuse the character anywhere in them."""
    for r in await name_answers(api, f"Maya (facilitator){char}Dr"):
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text


@pytest.mark.parametrize(
    "char", [pytest.param("\x07", id="C0 bell"), pytest.param("\n", id="line feed"), pytest.param("\t", id="tab")]
)
async def test_a_name_with_a_c0_control_is_still_a_bad_request(server: Running, api: Api, char: str) -> None:
    """The controls names always refused stay refused, in every kind of name."""
    for r in await name_answers(api, f"Maya{char}Dr"):
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request", r.text


async def test_a_name_with_a_lone_surrogate_is_a_bad_request(server: Running, api: Api) -> None:
    """A lone surrogate cannot reach a name: the body carrying it is refused."""
    body = b'{"username": "lone-surrogate", "password": "correct horse", "display_name": "Maya\\ud800"}'
    r = await api.http.post("/api/signup", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Zo\u00eb", id="latin"),
        pytest.param("\u0645\u0631\u064a\u0645", id="arabic"),
        pytest.param("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", id="persian with a zero-width non-joiner"),
        pytest.param("Sam \U0001f469\u200d\U0001f467", id="emoji joined by a zero-width joiner"),
    ],
)
async def test_names_in_any_script_and_joined_emoji_are_accepted(server: Running, api: Api, name: str) -> None:
    """Names in other scripts, ZWNJ inside a Persian word and ZWJ inside an emoji are fine."""
    answers = await name_answers(api, name)
    assert [r.status_code for r in answers] == [201, 201, 201], [r.text for r in answers]
    assert answers[0].json()["user"]["name"] == name


# Files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_data_directory_is_private_and_its_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    """Under a umask of 022, a fresh data directory is 0700, and the SQLite database, its
    -wal and -shm files and the development secret are 0600."""
    data = tmp_path / "fresh" / "data"
    previous = os.umask(0o022)
    try:
        async with serving(test_settings(data).with_(secret_key=None)) as (_, api):
            await api.signup()  # a write: the -wal file holds it
            files = [data / name for name in ("hearth.db", "hearth.db-wal", "hearth.db-shm", "secret_key")]
            modes = {path.name: oct(mode(path)) for path in files}
            assert mode(data) == 0o700, oct(mode(data))
    finally:
        os.umask(previous)
    assert modes == dict.fromkeys(modes, "0o600"), modes


async def test_the_database_of_an_older_install_is_made_private_at_start(tmp_path: Path) -> None:
    """A database file left 0644 by an earlier version is 0600 once the server has started."""
    async with serving(test_settings(tmp_path)) as (_, api):
        await api.signup()
    (tmp_path / "hearth.db").chmod(0o644)  # as an earlier version left it (a clean stop removes -wal and -shm)
    async with serving(test_settings(tmp_path)) as (_, api):
        await api.signup()
        assert oct(mode(tmp_path / "hearth.db")) == "0o600"
        assert oct(mode(tmp_path / "hearth.db-wal")) == "0o600"


# Configuration


async def hearth_command(tmp_path: Path, *args: str, stdin: bytes = b"", **env: str) -> tuple[int, str]:
    """Run `hearth ARGS` with `env` over a test's environment; its exit code and stderr."""
    environ = {**os.environ, "HEARTH_DATA_DIR": str(tmp_path), "HEARTH_SECRET_KEY": "process-secret", **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", *args, env=environ,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(stdin), 3 * TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"`hearth {' '.join(args)}` was still running") from None
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_production_without_a_secret_key_refuses_to_start(tmp_path: Path) -> None:
    """`hearth serve` with HEARTH_ENV=production and no HEARTH_SECRET_KEY exits 2 at once,
    naming the setting, instead of serving with a key of its own."""
    production = {"HEARTH_ENV": "production", "HEARTH_SECRET_KEY": ""}
    assert (await hearth_command(tmp_path, "migrate", **production))[0] == 0  # as a release step does
    code, err = await hearth_command(tmp_path, "serve", "--port", "0", **production)
    assert code == 2 and "HEARTH_SECRET_KEY must be set" in err, err
    assert not (tmp_path / "secret_key").exists()


async def test_the_password_is_never_taken_on_the_command_line(tmp_path: Path) -> None:
    """`hearth user create --password …` is refused (exit 2, pointing to --password-stdin)
    and makes no account: the same username is free for --password-stdin afterwards."""
    code, err = await hearth_command(
        tmp_path, "user", "create", "lee", "--role", "facilitator", "--password", "pw-12345678"
    )
    assert code == 2 and "--password-stdin" in err, err
    code, err = await hearth_command(
        tmp_path, "user", "create", "lee", "--role", "facilitator", "--password-stdin", stdin=b"pw-12345678\n"
    )
    assert code == 0, err


def test_the_procfile_runs_hearth_in_production() -> None:
    """Both Procfile processes run with HEARTH_ENV=production."""
    procfile = (Path(__file__).resolve().parent.parent / "Procfile").read_text().splitlines()
    assert [line.split(":", 1)[0] for line in procfile] == ["web", "release"]
    assert all("HEARTH_ENV=production hearth " in line for line in procfile), procfile


# Headers

WEB_CLIENT = Path(__file__).resolve().parent.parent / "web_client"


async def test_every_http_response_carries_the_security_headers(tmp_path: Path) -> None:
    """The page, its script, API answers (errors too), health and a 404 all carry a CSP
    without inline script, nosniff, no framing and no referrer."""
    async with serving(test_settings(tmp_path)) as (_, api):
        answers = [
            await api.http.get("/"),
            await api.http.get("/app.js"),
            await api.http.get("/api/me"),
            await api.http.post("/api/login", json={"username": "x", "password": "y"}),
            await api.http.get("/healthz"),
            await api.http.get("/no/such/page"),
        ]
    assert [r.status_code for r in answers] == [200, 200, 401, 401, 200, 404]
    for r in answers:
        csp = {d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split("; ")}
        assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"], csp
        assert csp["default-src"] == ["'none'"] and csp["frame-ancestors"] == ["'none'"], csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"


def test_the_web_client_needs_nothing_its_content_security_policy_forbids() -> None:
    """No inline script, style or event handler in the page, and no HTML or code built
    from strings in the script, so the page works under `script-src 'self'; style-src 'self'`."""
    page = (WEB_CLIENT / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and all('src="' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=|javascript:", page, re.I)
    script = (WEB_CLIENT / "app.js").read_text()
    for construct in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert construct not in script, construct
    assert not re.search(r"setAttribute\(\s*['\"](style|on)", script)
    assert not re.search(r"\bstyle\s*:", script)  # h(tag, {style: ...}) would become a style attribute
    assert "@import" not in (WEB_CLIENT / "style.css").read_text()
