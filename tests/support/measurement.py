"""Measurement: `HealthProbe` times /healthz while an attack runs, and `record_figure` keeps
a measured figure for the summary printed at the end of the run (conftest's
`pytest_terminal_summary`), whether the tests pass or fail.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.support.deadlines import TIMEOUT

# Figures the tests measured (a latency under attack, a time to recover), in the order taken.
FIGURES: list[str] = []


def record_figure(test: str, what: str, value: float, unit: str) -> None:
    FIGURES.append(f"{test}: {what} {value:.1f} {unit}")


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
            await asyncio.sleep(self.every)  # the probe's pace: one answer every 20 ms or so
