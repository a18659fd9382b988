"""`hearth serve` in a process of its own, for tests where timing, a blocked event loop, a
signal or a crash is the point: `ServerProcess`, and `process_account` and `process_room`
to set it up over HTTP and the command line as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import httpx

from tests.support.api import PASSWORD, Account, auth, new_username
from tests.support.deadlines import TIMEOUT


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
        """Start the server; return once its log names the port it listens on."""
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


async def process_account(proc: ServerProcess, role: str = "patient", *, join: bool = True) -> Account:
    """An account on a server process: staff through `hearth user create`, others by signup;
    with `join`, a member of the store's community (`process_community`) under its username."""
    username = new_username("p")
    async with httpx.AsyncClient(base_url=proc.http_url, timeout=TIMEOUT) as http:
        if role in ("facilitator", "clinician", "admin"):
            stdin = f"{PASSWORD}\n".encode()
            await proc.hearth("user", "create", username, "--role", role, "--password-stdin", stdin=stdin)
            r = await http.post("/api/login", json={"username": username, "password": PASSWORD})
        else:
            body = {"username": username, "password": PASSWORD, "display_name": username, "role": role}
            r = await http.post("/api/signup", json=body)
        assert r.status_code in (200, 201), r.text
        account = Account.signed_in(username, r.json())
        if join:
            community = await process_community(proc, account)
            r = await http.post(
                f"/api/communities/{community}/members", json={"display_name": username}, headers=auth(account)
            )
            assert r.status_code == 201, r.text
            account.member = r.json()["member"]["id"]
    return account


async def process_community(proc: ServerProcess, viewer: Account) -> str:
    """The community of the server's store, as `viewer` finds it: the first there is, or a
    new open one that an admin (made by `hearth user create`) makes. Workers that share a
    store share it."""
    async with httpx.AsyncClient(base_url=proc.http_url, timeout=TIMEOUT) as http:
        r = await http.get("/api/communities", headers=auth(viewer))
        assert r.status_code == 200, r.text
        if r.json()["communities"]:
            found: str = r.json()["communities"][0]["id"]
            return found
        admin = await process_account(proc, "admin", join=False)
        r = await http.post("/api/communities", json={"name": "Test community"}, headers=auth(admin))
        assert r.status_code == 201, r.text
        made: str = r.json()["community"]["id"]
        return made


async def process_room(proc: ServerProcess, owner: Account, kind: str = "drop_in") -> str:
    """A room on a server process, made by `owner` over HTTP in the store's community."""
    community = await process_community(proc, owner)
    async with httpx.AsyncClient(base_url=proc.http_url, timeout=TIMEOUT) as http:
        body = {"name": "Group", "kind": kind, "community": community}
        r = await http.post("/api/rooms", json=body, headers=auth(owner))
        assert r.status_code == 201, r.text
        room: str = r.json()["room"]["id"]
        return room
