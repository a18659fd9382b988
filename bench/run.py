"""Run every workload against the reference server and Hearth, and print the ratios.

    ./bench/run_all.sh                 # = uv run python bench/run.py all
    uv run python bench/run.py all --only reference,hearth-1w --quick

Set-ups, one at a time, each started and stopped here (loopback only, temporary data):

- `reference`: bench/reference_server.py, the websockets library's broadcast;
- `hearth-1w`: `hearth serve`, one process, SQLite in a temporary HEARTH_DATA_DIR, memory broker;
- `hearth-2w`: `hearth serve --workers 2` on Redis (127.0.0.1:6379, a fresh key prefix) and
  PostgreSQL (127.0.0.1:5432, a fresh database, dropped at the end).

Every loadgen run appends one JSON line to `--out`; the summary is a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadgen import positive  # bench/ is this script's directory, so it is on sys.path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN = BENCH / "loadgen.py"
FACILITATOR = ("benchfac", "bench-facilitator-pw")
PG = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
UNLIMITED = {
    "HEARTH_RATE": "1000000",
    "HEARTH_BURST": "1000000",
    "HEARTH_USER_RATE": "1000000",
    "HEARTH_USER_BURST": "1000000",
    "HEARTH_USER_CONNECTIONS": "1000000",
    "HEARTH_OUTBOX_BYTES": str(2**30),
    "HEARTH_MAX_CONNECTIONS_PER_ADDRESS": "1000000",  # every client comes from loopback
    "HEARTH_SIGNIN_RATE": "1000000",
    "HEARTH_SIGNIN_BURST": "1000000",
}


def log(*parts: object) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {limit} s")


def wait_port(port: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open within {limit} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, then SIGKILL after 20 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@dataclass
class Setup:
    name: str
    kind: str  # reference | hearth
    url: str
    facilitator: str | None
    user_cache: Path | None
    description: str
    backing_ports: tuple[int, ...] = ()


@contextmanager
def reference(tmp: Path) -> Iterator[Setup]:
    port = free_port()
    logf = (tmp / "reference.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "reference_server.py"), str(port)],
        stdout=logf,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(port, 20)
        yield Setup("reference", "reference", f"http://127.0.0.1:{port}", None, None, "websockets broadcast, 1 process")
    finally:
        stop(proc)


@contextmanager
def hearth(tmp: Path, name: str, workers: int, extra_env: dict[str, str]) -> Iterator[Setup]:
    data = tmp / name
    data.mkdir()
    env = {
        **os.environ,
        **UNLIMITED,
        **extra_env,
        "HEARTH_DATA_DIR": str(data),
        "HEARTH_SECRET_KEY": secrets.token_hex(32),
    }
    env.pop("PORT", None)
    uv = shutil.which("uv") or "uv"
    # An admin: it makes the bench's community, and its rooms there.
    create = ["user", "create", FACILITATOR[0], "--role", "admin", "--password-stdin"]
    subprocess.run(
        [uv, "run", "--frozen", "hearth", *create],
        input=(FACILITATOR[1] + "\n").encode(),
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    command = [uv, "run", "--frozen", "hearth", "serve", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    logf = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60)
        time.sleep(1)  # every worker up
        store = "PostgreSQL" if "DATABASE_URL" in extra_env else "SQLite"
        broker = "Redis" if "REDIS_URL" in extra_env else "memory broker"
        yield Setup(
            name,
            "hearth",
            f"http://127.0.0.1:{port}",
            ":".join(FACILITATOR),
            data / "bench-users.json",
            f"hearth serve, {workers} worker(s), {store}, {broker}",
            (6379, 5432) if workers > 1 else (),
        )
    finally:
        stop(proc)


@contextmanager
def postgres_db() -> Iterator[str]:
    import asyncpg

    name = "bench_" + secrets.token_hex(4)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG + "/postgres", timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield f"{PG}/{name}"
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def clear_redis(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


# Workloads and their scale: (name, loadgen arguments). `quick` divides the counts.
def plan(quick: bool, fanout_rate: float) -> list[tuple[str, str, list[str]]]:
    q = 5 if quick else 1

    def n(x: int) -> str:
        return str(max(1, x // q))

    dur = "4" if quick else "10"
    return [
        (
            "fanout",
            "fanout",
            ["--members", n(1000), "--rate", f"{fanout_rate:g}", "--senders", "10", "--duration", dur],
        ),
        # idle before rooms, whose 10,000 sockets would leave it a heap to reuse
        ("idle", "idle", ["--connections", n(10000), "--room-size", "100"]),
        ("rooms", "rooms", ["--rooms", n(1000), "--members", "10", "--rate", n(300), "--duration", dur]),
        ("storm", "storm", ["--clients", n(2000), "--rate", "20", "--before", "2", "--after", "6"]),
        ("durable", "durable", ["--clients", "50", "--rooms", "10", "--window", "4", "--duration", dur]),
    ]


CEILING = ["--members", "20", "--senders", "20", "--rate", "2000", "--duration", "5"]


def loadgen(
    setup: Setup, workload: str, extra: list[str], out: Path, label: str, extra_args: list[str]
) -> dict[str, Any] | None:
    cmd = [sys.executable, str(LOADGEN), workload, "--url", setup.url, "--kind", setup.kind, "--label", label]
    if setup.facilitator:
        cmd += ["--facilitator", setup.facilitator]
    if setup.user_cache:
        cmd += ["--user-cache", str(setup.user_cache)]
    for port in setup.backing_ports:
        cmd += ["--backing-port", str(port)]
    wait_quiet()
    cmd += [*extra, *extra_args, "--json", str(out)]
    log(f"{label} {workload}: {' '.join(extra)}")
    started = time.monotonic()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    except subprocess.TimeoutExpired:
        log(f"{label} {workload}: timed out")
        return None
    if res.returncode != 0:
        log(f"{label} {workload}: failed\n{res.stderr[-3000:]}")
        return None
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    print("\n".join(ln for ln in res.stdout.splitlines() if not ln.startswith("{")), flush=True)
    log(f"{label} {workload}: {time.monotonic() - started:.0f} s")
    rec: dict[str, Any] = json.loads(lines[-1])
    return rec


def busy() -> float:
    cols = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(cols) - cols[3] - cols[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit: float = 30, threshold: float = 0.25) -> None:
    """Others share this machine: wait (bounded) until it is idle before a run."""
    deadline = time.monotonic() + limit
    while True:
        b0 = busy()
        time.sleep(2)
        load = (busy() - b0) / 2
        if load < threshold:
            return
        if time.monotonic() > deadline:
            log(f"the machine is still busy ({load:.0%} of a core in use by others); running anyway")
            return
        log(f"waiting for the machine to go quiet ({load:.0%} of a core busy)")


# The summary: one row per figure, a column per set-up, and Hearth ÷ reference.
ROWS: list[tuple[str, str, str]] = [
    ("fanout", "deliveries_per_s", "deliveries/s"),
    ("fanout", "p50_ms", "p50 ms"),
    ("fanout", "p95_ms", "p95 ms"),
    ("fanout", "p99_ms", "p99 ms"),
    ("fanout", "max_ms", "max ms"),
    ("fanout", "lost", "lost"),
    ("fanout", "server_cpu_us_per_delivery", "server CPU µs/delivery"),
    ("fanout", "backing_cpu_us_per_delivery", "Redis+PostgreSQL CPU µs/delivery"),
    ("fanout", "server_rss_mb", "server RSS MB"),
    ("fanout", "other_cpu_pct", "other CPU % (noise)"),
    ("rooms", "deliveries_per_s", "deliveries/s"),
    ("rooms", "p50_ms", "p50 ms"),
    ("rooms", "p99_ms", "p99 ms"),
    ("rooms", "max_ms", "max ms"),
    ("rooms", "lost", "lost"),
    ("rooms", "server_cpu_us_per_delivery", "server CPU µs/delivery"),
    ("rooms", "backing_cpu_us_per_delivery", "Redis+PostgreSQL CPU µs/delivery"),
    ("rooms", "setup_s", "connect+join all, s"),
    ("rooms", "other_cpu_pct", "other CPU % (noise)"),
    ("idle", "connected", "connections"),
    ("idle", "bytes_per_connection", "server bytes/connection"),
    ("idle", "server_rss_after_mb", "server RSS after, MB"),
    ("idle", "connects_per_s", "connect+auth+join/s"),
    ("idle", "server_cpu_us_per_connect", "server CPU µs/connect"),
    ("storm", "resumed", "clients resumed"),
    ("storm", "catchup_p50_s", "catch-up p50 s"),
    ("storm", "catchup_max_s", "catch-up max s"),
    ("storm", "gaps", "gaps"),
    ("storm", "dups", "duplicates"),
    ("storm", "behind_at_end", "behind at end"),
    ("storm", "p99_ms", "live p99 ms during storm"),
    ("storm", "other_cpu_pct", "other CPU % (noise)"),
    ("durable", "committed_per_s", "acked sends/s"),
    ("durable", "ack_p50_ms", "ack p50 ms"),
    ("durable", "ack_p99_ms", "ack p99 ms"),
    ("durable", "server_cpu_us_per_commit", "server CPU µs/send"),
    ("durable", "backing_cpu_us_per_commit", "Redis+PostgreSQL CPU µs/send"),
    ("durable", "other_cpu_pct", "other CPU % (noise)"),
]
RATIO = {"p50_ms", "p95_ms", "p99_ms", "max_ms", "server_cpu_us_per_delivery", "bytes_per_connection"}
RATIO |= {"server_rss_mb", "catchup_max_s", "catchup_p50_s", "server_cpu_us_per_commit", "deliveries_per_s"}
RATIO |= {"committed_per_s", "connects_per_s"}


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def summary(records: list[dict[str, Any]], names: list[str]) -> str:
    by = {(r["label"], r["workload"]): r for r in records}
    hearths = [n for n in names if n != "reference"]
    head = ["workload", "figure", *names, *(f"{h} ÷ ref" for h in hearths)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for workload, key, title in ROWS:
        vals = [by.get((n, workload), {}).get("results", {}).get(key) for n in names]
        if all(v is None for v in vals):
            continue
        ref = vals[names.index("reference")] if "reference" in names else None
        ratios = []
        for h in hearths:
            v = vals[names.index(h)]
            ok = key in RATIO and isinstance(ref, int | float) and isinstance(v, int | float) and ref
            ratios.append(f"{v / ref:.2f}×" if ok else "")
        out.append("| " + " | ".join([workload, title, *map(fmt, vals), *ratios]) + " |")
    return "\n".join(out)


def machine() -> str:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        "?",
    )
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return f"{os.cpu_count()} CPUs ({model}), {mem / 1024:.1f} GiB memory, Python {sys.version.split()[0]}"


def cmd_all(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log(f"machine: {machine()}; open files: {hard}; results: {args.out}")
    only = args.only.split(",") if args.only else ["reference", "hearth-1w", "hearth-2w"]
    work = plan(args.quick, args.fanout_rate)
    if args.workloads:
        work = [w for w in work if w[0] in args.workloads.split(",")]
    started = time.monotonic()
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for name in only:
            log(f"== {name}")
            try:
                if name == "reference":
                    ctx = reference(tmp)
                elif name == "hearth-1w":
                    ctx = hearth(tmp, name, 1, {})
                else:
                    prefix = f"bench:{secrets.token_hex(4)}:"
                    with postgres_db() as db:
                        redis_env = {"REDIS_URL": REDIS, "HEARTH_REDIS_PREFIX": prefix, "DATABASE_URL": db}
                        try:
                            with hearth(tmp, name, 2, redis_env) as setup:
                                records += run_setup(setup, work, args)
                        finally:
                            clear_redis(prefix)
                    continue
                with ctx as setup:
                    records += run_setup(setup, work, args)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                log(f"{name}: could not run: {exc}")
    print()
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}, {time.monotonic() - started:.0f} s in all")
    print(summary(records, [n for n in only if any(r["label"] == n for r in records)]))
    for r in records:
        if r["label"] == "ceiling":
            res = r["results"]
            print(
                f"\ngenerator ceiling (against the reference, {r['params']}): {fmt(res['deliveries_per_s'])} "
                f"deliveries/s received, generator {fmt(res['gen_cpu_us_per_delivery'])} µs CPU per delivery "
                f"({fmt(res['gen_cpu_pct'])} % of one core), so about "
                f"{fmt(1e6 / res['gen_cpu_us_per_delivery'])} deliveries/s per generator core"
            )
    return 0


def run_setup(setup: Setup, work: list[tuple[str, str, list[str]]], args: argparse.Namespace) -> list[dict[str, Any]]:
    log(f"{setup.name}: {setup.description} at {setup.url}")
    records = []
    if setup.kind == "reference" and not args.quick:
        rec = loadgen(setup, "fanout", CEILING, args.out, "ceiling", [])
        if rec:
            records.append(rec)
    for _, workload, extra in work:
        rec = loadgen(setup, workload, extra, args.out, setup.name, ["--quiet", str(args.quiet)])
        if rec:
            records.append(rec)
    return records


def main() -> int:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("all", help="every workload against every set-up")
    a.add_argument("--only", help="comma-separated set-ups: reference,hearth-1w,hearth-2w")
    a.add_argument("--workloads", help="comma-separated: fanout,rooms,idle,storm,durable")
    a.add_argument("--quick", action="store_true", help="a fifth of the scale, 4 s runs: a smoke test")
    a.add_argument("--fanout-rate", type=positive, default=20.0, help="messages/s into the fanout room (20)")
    a.add_argument("--quiet", type=float, default=2.0, help="seconds without a delivery that end a run's drain")
    a.add_argument("--out", type=Path, default=BENCH / "results.jsonl", help="JSON lines are appended here")
    args = p.parse_args()
    return cmd_all(args)


if __name__ == "__main__":
    sys.exit(main())
