"""`hearth serve --workers N`: N worker processes, each listening on the same port.

Each worker is a whole Hearth (`hearth serve --reuse-port`), sharing Redis and the database
with the others, with a listening socket of its own bound with SO_REUSEPORT: the kernel
spreads new connections evenly over them. (One inherited socket would let whichever worker
wakes first accept a whole burst, such as a reconnect storm after a deploy, by itself.) The
parent holds the port, forwards SIGTERM and SIGINT, and restarts a worker that died.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from types import FrameType

from server.settings import Settings

log = logging.getLogger("hearth.workers")


def port_socket(host: str, port: int, *, listening: bool) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT: the parent's holds the port (port 0
    picks one), each worker's listens on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    if listening:
        sock.listen(2048)
    return sock


def port_taken(host: str, port: int) -> OSError | None:
    """Whether something listens on the port already. Binding with SO_REUSEPORT would not
    say: a second `hearth serve --workers` would share the port with the first, silently."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


def run_workers(settings: Settings, count: int) -> int:
    if settings.broker_url.startswith("memory://"):
        log.error("several workers need a shared broker: set REDIS_URL (and DATABASE_URL for PostgreSQL)")
        return 2
    if settings.port and (taken := port_taken(settings.host, settings.port)) is not None:
        log.error("cannot listen on %s:%s: %s (is Hearth running there already?)", settings.host, settings.port, taken)
        return 2
    sock = port_socket(settings.host, settings.port, listening=False)
    port = sock.getsockname()[1]
    print(f"Hearth running on http://{settings.host}:{port} with {count} workers", file=sys.stderr, flush=True)
    command = [
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        "--host",
        settings.host,
        "--port",
        str(port),
        "--reuse-port",
    ]
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=os.environ.copy())

    procs = [spawn() for _ in range(count)]
    while not stopping:
        time.sleep(0.2)
        for i, proc in enumerate(procs):
            if proc.poll() is not None and not stopping:
                log.warning("worker pid=%s exited with %s; starting another", proc.pid, proc.returncode)
                procs[i] = spawn()
    for proc in procs:
        proc.send_signal(stopping[0])
    for proc in procs:
        proc.wait()
    sock.close()
    return 0
