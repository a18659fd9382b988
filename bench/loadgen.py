"""Hearth load generator: fanout, rooms, idle, storm, durable (and ceiling, the generator's own).

The coordinator (this process) provisions users and rooms over HTTP, then starts `--procs`
client processes (`bench/build/wsload`, compiled from `bench/wsload.c`, fed a spec on stdin)
that hold the websockets, and drives them in phases over their stdin/stdout: ready -> go
[-> drop] -> result. Latency is end to end: each `send` carries its CLOCK_MONOTONIC send time
(shared by every process on the machine) as its text, and each receiver times the `message`
event's arrival.

    uv run python bench/loadgen.py fanout --url http://127.0.0.1:8000 --facilitator NAME:PASS
    uv run python bench/loadgen.py fanout --url http://127.0.0.1:8765 --kind reference

Every run prints a table and appends one JSON line to `--json FILE` (if given).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MSGPACK, JSON = "hearth.v1.msgpack", "hearth.v1.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------------------------
# The client: bench/wsload.c, one process per `--procs`

WSLOAD_SOURCE = Path(__file__).with_name("wsload.c")
WSLOAD = Path(__file__).with_name("build") / "wsload"


def client_binary() -> Path:
    """bench/build/wsload, compiled from bench/wsload.c when it is missing or older than its
    source (`CC`, default `cc`)."""
    if not WSLOAD.exists() or WSLOAD.stat().st_mtime < WSLOAD_SOURCE.stat().st_mtime:
        WSLOAD.parent.mkdir(exist_ok=True)
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O2", "-Wall", "-o", str(WSLOAD), str(WSLOAD_SOURCE), "-lm"], check=True)
    return WSLOAD


# --------------------------------------------------------------------------------------------
# /proc: server CPU and memory


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def pids_on_port(port: int) -> list[int]:
    """Every process holding the listening socket of `port` (a `--workers` parent and its workers)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    found.append(int(entry.name))
                    break
        except OSError:
            continue
    return sorted(found)


def busy_seconds() -> float:
    """CPU time the whole machine spent busy, all cores."""
    cols = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(cols) - cols[3] - cols[4]) / CLK_TCK


def children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(p) for p in task.read_text().split()]
        except OSError:
            pass
    return kids


# --------------------------------------------------------------------------------------------
# Latency histogram: 0.5 % buckets, mergeable across processes


class Hist:
    """Each client process buckets its samples as they arrive (`hist_add` in wsload.c: bucket
    int(log(microseconds) * SCALE)); the coordinator `merge`s their buckets."""

    SCALE = 200.0

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.max = 0.0
        self.count = 0

    def merge(self, data: dict[str, Any]) -> None:
        for k, v in data["b"].items():
            self.buckets[int(k)] += v
            self.count += v
        self.max = max(self.max, data["max"])

    def pct(self, p: float) -> float | None:
        """The p-th percentile in milliseconds (None when empty)."""
        if not self.count:
            return None
        rank, seen = p / 100 * self.count, 0
        for k in sorted(self.buckets):
            seen += self.buckets[k]
            if seen >= rank:
                return math.exp((k + 0.5) / self.SCALE) / 1000
        return self.max * 1000


# --------------------------------------------------------------------------------------------
# Coordinator: provisioning over HTTP


@dataclass
class Target:
    http: str
    kind: str  # hearth | reference
    encoding: str
    facilitator: str | None
    user_cache: Path | None
    pids: list[int]
    backing_ports: list[int]

    @property
    def ws(self) -> str:
        return self.http.replace("http://", "ws://").rstrip("/") + "/ws"


async def bench_community(http: Any, auth: dict[str, str]) -> str:
    """The community the bench's rooms and users are in: the first there is, made by the
    bench's admin the first time."""
    r = await http.get("/api/communities", headers=auth)
    r.raise_for_status()
    if r.json()["communities"]:
        return str(r.json()["communities"][0]["id"])
    r = await http.post("/api/communities", json={"name": "Bench", "join": "open"}, headers=auth)
    r.raise_for_status()
    return str(r.json()["community"]["id"])


async def provision(t: Target, n_rooms: int, n_users: int, run: str) -> tuple[list[str], list[str]]:
    """(tokens of n_users users, n_rooms fresh drop-in room ids)."""
    if t.kind == "reference":
        return ["any"] * n_users, [f"r_{run}{i}" for i in range(n_rooms)]
    import httpx

    assert t.facilitator, "--facilitator NAME:PASSWORD is needed against Hearth"
    tokens: list[str] = []
    if t.user_cache and t.user_cache.exists():
        tokens = json.loads(t.user_cache.read_text())[:n_users]
    async with httpx.AsyncClient(base_url=t.http, timeout=60) as http:
        name, password = t.facilitator.split(":", 1)
        r = await http.post("/api/login", json={"username": name, "password": password})
        r.raise_for_status()
        auth = {"Authorization": "Bearer " + r.json()["token"]}
        gate = asyncio.Semaphore(16)
        community = await bench_community(http, auth)

        async def room(i: int) -> str:
            async with gate:
                body = {"name": f"bench {run} {i}", "kind": "drop_in", "community": community}
                r = await http.post("/api/rooms", json=body, headers=auth)
                r.raise_for_status()
                return str(r.json()["room"]["id"])

        rooms = await asyncio.gather(*(room(i) for i in range(n_rooms)))
    # Sign-ups are throttled per client address (burst 10): each batch of 10 comes from its
    # own loopback address, 127.0.1.x.
    missing = n_users - len(tokens)
    for batch in range(0, missing, 10):
        transport = httpx.AsyncHTTPTransport(local_address=f"127.0.{1 + batch // 2500}.{2 + (batch // 10) % 250}")
        async with httpx.AsyncClient(base_url=t.http, timeout=120, transport=transport) as http:

            async def signup(i: int) -> str:
                user = f"b{run}{i}"
                body = {"username": user, "password": "bench-password", "display_name": user}
                r = await http.post("/api/signup", json=body)
                r.raise_for_status()
                token = str(r.json()["token"])
                r = await http.post(  # a member of the bench's community, under the same name
                    f"/api/communities/{community}/members",
                    json={"display_name": user},
                    headers={"Authorization": "Bearer " + token},
                )
                r.raise_for_status()
                return token

            tokens += await asyncio.gather(*(signup(batch + i) for i in range(min(10, missing - batch))))
    if t.user_cache and missing > 0:
        t.user_cache.write_text(json.dumps(tokens))
    return tokens, list(rooms)


# --------------------------------------------------------------------------------------------
# Coordinator: running the workers


@dataclass
class Run:
    target: Target
    procs: int
    clients: list[dict[str, Any]]  # {"token", "room", "send"?: {"rate", "phase"} or {"window"}}
    concurrency: int = 200
    quiet: float = 1.0
    run: str = field(default_factory=lambda: "b" + secrets.token_hex(3))
    workers: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def start(self, limit: float) -> dict[str, Any]:
        binary = client_binary()
        for wid in range(self.procs):
            proc = await asyncio.create_subprocess_exec(
                str(binary), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 30
            )
            assert proc.stdin is not None
            proc.stdin.write(self.spec(wid).encode())
            await proc.stdin.drain()
            self.workers.append(proc)
        ready = await asyncio.wait_for(asyncio.gather(*(self.read(p) for p in self.workers)), limit)
        errors: Counter[str] = Counter()
        for r in ready:
            errors.update(r["connect_errors"])
        return {"connected": sum(r["ready"] for r in ready), "connect_errors": dict(errors)}

    def spec(self, wid: int) -> str:
        """wsload's spec (its header comment): the target, then one line per client."""
        url = urlsplit(self.target.ws)
        lines = [
            f"target {url.hostname} {url.port or 80} {url.path or '/'}",
            f"encoding {'json' if self.target.encoding == JSON else 'msgpack'}",
            f"run {self.run}.",
            f"wid {wid}",
            f"concurrency {self.concurrency}",
            f"quiet {self.quiet!r}",
        ]
        for c in self.clients[wid :: self.procs]:
            send = c.get("send")
            how = ""
            if send and "window" in send:
                how = f" window {send['window']}"
            elif send:
                how = f" rate {send['rate']!r} {send.get('phase', 0.0)!r}"
            lines.append(f"client {c['token']} {c['room']}{how}")
        return "\n".join([*lines, "end", ""])

    async def read(self, proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError("a worker died")
        data: dict[str, Any] = json.loads(line)
        return data

    async def tell(self, cmd: str) -> None:
        for p in self.workers:
            assert p.stdin is not None
            p.stdin.write(cmd.encode() + b"\n")
        await asyncio.gather(*(p.stdin.drain() for p in self.workers if p.stdin))

    async def go(self, duration: float, drain: float) -> None:
        """Every worker starts its senders at the same instant (CLOCK_MONOTONIC is machine-wide)."""
        await self.tell(f"go {time.monotonic() + 0.1!r} {duration!r} {drain!r}")

    async def results(self, limit: float) -> list[dict[str, Any]]:
        await self.tell("result")
        return list(await asyncio.wait_for(asyncio.gather(*(self.read(p) for p in self.workers)), limit))

    def gen_cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.workers)

    async def stop(self) -> None:
        for p in self.workers:
            if p.returncode is None and p.stdin is not None:
                try:
                    p.stdin.write(b"quit\n")
                    p.stdin.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass
        for p in self.workers:
            try:
                await asyncio.wait_for(p.wait(), 30)
            except TimeoutError:
                p.kill()
                await p.wait()


class Meter:
    """CPU seconds of the server, the generator, and everything else on the machine."""

    def __init__(self, t: Target, run: Run) -> None:
        self.t, self.run = t, run
        self.start = self.read()

    def read(self) -> tuple[float, float, float, float, float, float]:
        own = cpu_seconds(os.getpid())
        backing = sum(cpu_seconds(p) for p in backing_pids(self.t))
        return (
            time.monotonic(),
            server_cpu(self.t),
            self.run.gen_cpu() + own,
            busy_seconds(),
            backing,
            server_rss(self.t),
        )

    def stop(self, units: int, unit: str = "delivery") -> dict[str, Any]:
        end = self.read()
        wall, srv, gen, busy, backing = (end[i] - self.start[i] for i in range(5))
        backing = max(0.0, backing)
        out = {
            "server_cpu_s": round(srv, 2),
            f"server_cpu_us_per_{unit}": round(srv * 1e6 / units, 2) if units else None,
            "server_cpu_pct": round(srv / wall * 100, 1),
            "server_rss_mb": round(end[5] / 2**20, 1),
        }
        if self.t.backing_ports:
            out[f"backing_cpu_us_per_{unit}"] = round(backing * 1e6 / units, 2) if units else None
            out["backing_cpu_pct"] = round(backing / wall * 100, 1)  # low when a backend exited meanwhile
        out[f"gen_cpu_us_per_{unit}"] = round(gen * 1e6 / units, 2) if units else None
        out["gen_cpu_pct"] = round(gen / wall * 100, 1)
        out["other_cpu_pct"] = round(max(0.0, busy - srv - gen - backing) / wall * 100, 1)
        return out


def backing_pids(t: Target) -> list[int]:
    """Redis and PostgreSQL (the postmaster and its backends), when their ports are given."""
    pids: set[int] = set()
    for port in t.backing_ports:
        for p in pids_on_port(port):
            pids.add(p)
            pids.update(children(p))
    return sorted(pids)


def server_cpu(t: Target) -> float:
    return sum(cpu_seconds(p) for p in all_pids(t))


def server_rss(t: Target) -> int:
    return sum(rss_bytes(p) for p in all_pids(t))


def all_pids(t: Target) -> list[int]:
    pids = set(t.pids)
    for p in t.pids:
        pids.update(children(p))
    return sorted(pids)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    lat, ack = Hist(), Hist()
    acked: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    max_seq: dict[str, int] = {}
    min_last: dict[str, int] = {}
    phases: list[list[float]] = []
    connect_errors: Counter[str] = Counter()
    out: dict[str, Any] = {k: 0 for k in ("received", "replayed", "gaps", "dups", "sent", "open")}
    for r in results:
        for k in out:
            out[k] += r[k]
        lat.merge(r["lat"])
        ack.merge(r["ack"])
        acked.update(r["acked"])
        errors.update(r["errors"])
        closes.update(r["closes"])
        phases += r["phases"]
        connect_errors.update(r["connect_errors"])
        for room, seq in r["max_seq"].items():
            max_seq[room] = max(max_seq.get(room, 0), seq)
        for room, seq in r["min_last"].items():
            min_last[room] = min(min_last.get(room, seq), seq)
    out.update(acked=acked, errors=dict(errors), closes=dict(closes), max_seq=max_seq, min_last=min_last)
    out.update(lat=lat, ack=ack, phases=phases, connect_errors=dict(connect_errors))
    return out


def ms(h: Hist, p: float) -> float | None:
    v = h.pct(p)
    return None if v is None else round(v, 2)


def latency_fields(m: dict[str, Any]) -> dict[str, Any]:
    lat, ack = m["lat"], m["ack"]
    return {
        "p50_ms": ms(lat, 50),
        "p95_ms": ms(lat, 95),
        "p99_ms": ms(lat, 99),
        "max_ms": round(lat.max * 1000, 2) if lat.count else None,
        "ack_p50_ms": ms(ack, 50),
        "ack_p99_ms": ms(ack, 99),
    }


# --------------------------------------------------------------------------------------------
# Workloads


async def talk(
    args: argparse.Namespace, t: Target, n_rooms: int, per_room: int, senders_per_room: int, rate: float
) -> dict[str, Any]:
    """Shared by fanout (1 room) and rooms (many): `rate` messages/s in all, spread over rooms."""
    tokens, rooms = await provision(t, n_rooms, args.users, "f" + secrets.token_hex(2))
    clients: list[dict[str, Any]] = []
    per_sender = rate / (n_rooms * senders_per_room)
    for r, room in enumerate(rooms):
        for k in range(per_room):
            c: dict[str, Any] = {"token": tokens[(r * per_room + k) % len(tokens)], "room": room}
            if k < senders_per_room:
                # phase: senders spread over the interval, and rooms spread over it too
                phase = (k + r / n_rooms) / senders_per_room
                c["send"] = {"rate": per_sender, "phase": phase}
            clients.append(c)
    run = Run(t, args.procs, clients, args.concurrency, args.quiet)
    try:
        t_setup = time.monotonic()
        conn = await run.start(args.setup_timeout)
        setup_s = time.monotonic() - t_setup
        meter = Meter(t, run)
        await run.go(args.duration, args.drain)
        results = await run.results(args.duration + args.drain + 60)
        m = merge(results)
        cpu = meter.stop(m["received"])
    finally:
        await run.stop()
    expected = sum(n * per_room for n in m["acked"].values())
    delivered = m["received"]
    return {
        "params": {"rooms": n_rooms, "members": per_room, "senders": senders_per_room, "rate": rate},
        "connected": conn["connected"],
        "connect_errors": conn["connect_errors"],
        "setup_s": round(setup_s, 1),
        "sent": m["sent"],
        "acked": sum(m["acked"].values()),
        "send_errors": m["errors"],
        "deliveries": delivered,
        "deliveries_per_s": round(delivered / args.duration, 1),
        "lost": expected - delivered,
        "gaps": m["gaps"],
        "dups": m["dups"],
        "closes": m["closes"],
        **latency_fields(m),
        **cpu,
    }


async def w_fanout(args: argparse.Namespace, t: Target) -> dict[str, Any]:
    return await talk(args, t, 1, args.members, min(args.senders, args.members), args.rate)


async def w_rooms(args: argparse.Namespace, t: Target) -> dict[str, Any]:
    return await talk(args, t, args.rooms, args.members, 1, args.rate)


async def w_idle(args: argparse.Namespace, t: Target) -> dict[str, Any]:
    n_rooms = max(1, math.ceil(args.connections / args.room_size))
    tokens, rooms = await provision(t, n_rooms, args.users, "i" + secrets.token_hex(2))
    clients = [{"token": tokens[i % len(tokens)], "room": rooms[i % n_rooms]} for i in range(args.connections)]
    run = Run(t, args.procs, clients, args.concurrency, args.quiet)
    await asyncio.sleep(1)
    before = server_rss(t)
    try:
        t0, cpu0 = time.monotonic(), server_cpu(t)
        conn = await run.start(args.setup_timeout)
        setup_s, cpu = time.monotonic() - t0, server_cpu(t) - cpu0
        await asyncio.sleep(args.settle)
        after = server_rss(t)
        per_worker = {str(p): round(rss_bytes(p) / 2**20, 1) for p in all_pids(t)}
    finally:
        await run.stop()
    n = conn["connected"]
    return {
        "params": {"connections": args.connections, "room_size": args.room_size},
        "connected": n,
        "connect_errors": conn["connect_errors"],
        "setup_s": round(setup_s, 1),
        "connects_per_s": round(n / setup_s, 1),
        "server_cpu_us_per_connect": round(cpu / n * 1e6) if n else None,
        "server_rss_before_mb": round(before / 2**20, 1),
        "server_rss_after_mb": round(after / 2**20, 1),
        "server_rss_by_pid_mb": per_worker,
        "bytes_per_connection": round((after - before) / n) if n else None,
    }


async def w_storm(args: argparse.Namespace, t: Target) -> dict[str, Any]:
    tokens, rooms = await provision(t, 1, args.users, "s" + secrets.token_hex(2))
    room = rooms[0]
    clients: list[dict[str, Any]] = [{"token": tokens[0], "room": room, "send": {"rate": args.rate}}]
    clients += [{"token": tokens[i % len(tokens)], "room": room} for i in range(args.clients)]
    run = Run(t, args.procs, clients, args.concurrency, args.quiet)
    try:
        conn = await run.start(args.setup_timeout)
        meter = Meter(t, run)
        await run.go(args.before + args.after, args.drain)
        await asyncio.sleep(args.before)
        t_drop = time.monotonic()
        await run.tell(f"drop {t_drop!r}")
        results = await run.results(args.before + args.after + args.drain + args.setup_timeout)
        m = merge(results)
        cpu = meter.stop(m["received"])
    finally:
        await run.stop()
    final = m["max_seq"].get(room, 0)
    behind = final - m["min_last"].get(room, 0)
    return {
        "params": {"clients": args.clients, "rate": args.rate},
        "connected": conn["connected"],
        "resumed": len(m["phases"]),
        # seconds from the drop until caught up (the join answered), and where the time went:
        # until TCP connected, the upgrade answered, the auth answered
        **phase_fields(m["phases"]),
        "resume_errors": dict(Counter(m["connect_errors"]) - Counter(conn["connect_errors"])),  # not the first connects
        "replayed": m["replayed"],
        "gaps": m["gaps"],
        "dups": m["dups"],
        "behind_at_end": behind,
        "acked": sum(m["acked"].values()),
        "send_errors": m["errors"],
        "closes": m["closes"],
        **latency_fields(m),
        **cpu,
    }


def phase_fields(phases: list[list[float]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for i, name in ((3, "catchup"), (0, "connected"), (1, "upgraded"), (2, "authed")):
        col = sorted(p[i] for p in phases)
        out[f"{name}_p50_s"] = round(col[len(col) // 2], 3) if col else None
        out[f"{name}_max_s"] = round(col[-1], 3) if col else None
    return out


async def w_durable(args: argparse.Namespace, t: Target) -> dict[str, Any]:
    tokens, rooms = await provision(t, args.rooms, args.users, "d" + secrets.token_hex(2))
    clients = [
        {"token": tokens[i % len(tokens)], "room": rooms[i % len(rooms)], "send": {"window": args.window}}
        for i in range(args.clients)
    ]
    run = Run(t, args.procs, clients, args.concurrency, args.quiet)
    try:
        await run.start(args.setup_timeout)
        meter = Meter(t, run)
        await run.go(args.duration, args.drain)
        results = await run.results(args.duration + args.drain + 60)
        m = merge(results)
        acked = sum(m["acked"].values())
        cpu = meter.stop(acked, "commit")
    finally:
        await run.stop()
    return {
        "params": {"clients": args.clients, "rooms": args.rooms, "window": args.window},
        "sent": m["sent"],
        "acked": acked,
        "committed_per_s": round(acked / args.duration, 1),
        "send_errors": m["errors"],
        "deliveries": m["received"],
        "gaps": m["gaps"],
        "closes": m["closes"],
        **latency_fields(m),
        **cpu,
    }


WORKLOADS = {"fanout": w_fanout, "rooms": w_rooms, "idle": w_idle, "storm": w_storm, "durable": w_durable}


def positive(text: str) -> float:
    """An argparse type: a rate of 0 or less would never send (or divide by zero), nor would
    an infinite one pace anything."""
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loadgen", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="workload", required=True)

    def common(name: str, text: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=text)
        s.add_argument("--url", default="http://127.0.0.1:8000", help="the server's HTTP base")
        s.add_argument("--kind", choices=["hearth", "reference"], default="hearth")
        s.add_argument("--encoding", choices=["msgpack", "json"], default="msgpack")
        s.add_argument("--facilitator", help="NAME:PASSWORD of a facilitator (hearth user create)")
        s.add_argument("--users", type=int, default=20, help="users signed up; connections share them")
        s.add_argument("--user-cache", type=Path, help="a file of tokens reused between runs")
        s.add_argument("--pid", type=int, action="append", help="server pid (default: who listens on the port)")
        s.add_argument("--backing-port", type=int, action="append", help="Redis/PostgreSQL port: CPU reported apart")
        s.add_argument("--procs", type=int, default=2, help="generator processes")
        s.add_argument("--concurrency", type=int, default=200, help="connections opening at once, per process")
        s.add_argument("--setup-timeout", type=float, default=300)
        s.add_argument("--drain", type=float, default=10, help="seconds at most to wait for stragglers")
        s.add_argument("--quiet", type=float, default=2.0, help="the stream counts as drained after this quiet")
        s.add_argument("--label", default="", help="a name for this server set-up in the output")
        s.add_argument("--json", type=Path, help="append the JSON line to this file")
        return s

    s = common("fanout", "S members in one room, R messages/s for T s")
    s.add_argument("--members", type=int, default=1000)
    s.add_argument("--senders", type=int, default=10)
    s.add_argument("--rate", type=positive, default=100, help="messages/s into the room, all senders")
    s.add_argument("--duration", type=float, default=10)
    s = common("rooms", "many rooms of a few members, talking")
    s.add_argument("--rooms", type=int, default=1000)
    s.add_argument("--members", type=int, default=10)
    s.add_argument("--rate", type=positive, default=200, help="messages/s in all rooms together")
    s.add_argument("--duration", type=float, default=10)
    s = common("idle", "N idle, authenticated, joined connections: memory per connection")
    s.add_argument("--connections", type=int, default=10000)
    s.add_argument("--room-size", type=int, default=100)
    s.add_argument("--settle", type=float, default=3)
    s = common("storm", "N joined clients drop at once and resume with since while one sends")
    s.add_argument("--clients", type=int, default=2000)
    s.add_argument("--rate", type=positive, default=20, help="messages/s of the one sender")
    s.add_argument("--before", type=float, default=2, help="seconds of sending before the drop")
    s.add_argument("--after", type=float, default=8, help="seconds of sending after the drop")
    s.set_defaults(concurrency=1000)  # reconnections at once, per process
    s = common("durable", "clients sending as fast as acks allow: committed messages/s")
    s.add_argument("--clients", type=int, default=50)
    s.add_argument("--rooms", type=int, default=10)
    s.add_argument("--window", type=int, default=4, help="sends in flight per client")
    s.add_argument("--duration", type=float, default=10)
    return p


def table(rec: dict[str, Any]) -> str:
    head = f"{rec['workload']} on {rec['label'] or rec['url']} ({rec['encoding']}) {json.dumps(rec['params'])}"
    rows = [head, "-" * min(len(head), 100)]
    for k, v in rec["results"].items():
        if v not in ({}, None) or k.endswith("_ms"):
            rows.append(f"  {k:<28} {v}")
    return "\n".join(rows)


async def coordinator(args: argparse.Namespace) -> dict[str, Any]:
    port = int(args.url.rsplit(":", 1)[1].split("/")[0])
    pids = args.pid or pids_on_port(port)
    if not pids:
        print(f"loadgen: no process listens on port {port}; server CPU and memory will read 0", file=sys.stderr)
    encoding = MSGPACK if args.encoding == "msgpack" else JSON
    backing = args.backing_port or []
    t = Target(args.url.rstrip("/"), args.kind, encoding, args.facilitator, args.user_cache, pids, backing)
    started = time.monotonic()
    results = await WORKLOADS[args.workload](args, t)
    params = results.pop("params")
    rec = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "workload": args.workload,
        "label": args.label,
        "kind": args.kind,
        "url": args.url,
        "encoding": encoding,
        "server_pids": all_pids(t),
        "client": "wsload",  # the generator's client (bench/wsload.c); before 2026-12-04, Python
        "procs": args.procs,
        "params": params,
        "results": results,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    return rec


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    rec = asyncio.run(coordinator(args))
    print(table(rec))
    line = json.dumps(rec, sort_keys=False)
    print(line)
    if args.json:
        with args.json.open("a") as f:
            f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
