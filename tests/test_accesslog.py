"""The access log as an operator reads it from `hearth serve`: one line per HTTP request, with
the route's template where the path was."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx

from tests.conftest import TIMEOUT, ServerProcess, auth, open_client, process_account

LINE = re.compile(r"(?P<method>[A-Z]+) (?P<template>\S+) (?P<status>\d{3}) (?P<ms>\d+\.\d)ms")


def access_lines(proc: ServerProcess) -> list[str]:
    entries = [json.loads(line) for line in proc.log if line.startswith("{")]
    return [entry["msg"] for entry in entries if entry["logger"] == "hearth.access"]


async def test_each_http_request_gets_one_line_with_its_route_template_and_a_websocket_none(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    """Method, template, status and milliseconds on `hearth.access`, in order; never a path or a
    token; uvicorn's own access log, which wrote paths, says nothing; a websocket adds no line."""
    proc = await ServerProcess(tmp_path, HEARTH_LOG_FORMAT="json").start()
    processes.append(proc)
    member = await process_account(proc, join=False)  # a signup alone: nothing else is logged before
    async with httpx.AsyncClient(base_url=proc.http_url, timeout=TIMEOUT) as http:
        url = (await http.get("/api/me/calendar-token", headers=auth(member))).json()["url"]
        assert (await http.get(url)).status_code == 200
        client = await open_client(proc, member)
        await client.close()
        r = await http.get("/api/sessions/s_nothing_here/occurrences", headers=auth(member))
        assert r.status_code == 404
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/api/rooms", headers=auth(member))).status_code == 200
    for _ in range(int(TIMEOUT / 0.02)):  # the server's log reaches us through a pipe
        if any(line.startswith("GET /api/rooms ") for line in access_lines(proc)):
            break
        await asyncio.sleep(0.02)
    lines = access_lines(proc)
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    assert [(m["method"], m["template"], m["status"]) for m in parsed if m] == [
        ("POST", "/api/signup", "201"),
        ("GET", "/api/me/calendar-token", "200"),
        ("GET", "/api/calendar/{token}.ics", "200"),
        ("GET", "/api/sessions/{session}/occurrences", "404"),
        ("GET", "/healthz", "200"),
        ("GET", "/{path}", "200"),
        ("GET", "/api/rooms", "200"),
    ]
    logged = "".join(proc.log)
    token = url.removeprefix("/api/calendar/").removesuffix(".ics")
    assert token not in logged and member.token not in logged and "s_nothing_here" not in logged
    assert '"logger":"uvicorn.access"' not in logged
