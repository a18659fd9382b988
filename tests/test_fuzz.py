"""Fuzzing, on a budget: the frame decoder with arbitrary bytes, and every command with
arbitrary arguments against a real `hearth serve`. Whatever comes in, the answer is a
map or a clean protocol error, never `internal`, and nothing reaches the server's log as
a failure."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from server.codec import JsonCodec, MsgpackCodec, ProtocolViolation, peek_id
from server.dispatch import OPS

BUDGET = int(os.environ.get("HEARTH_FUZZ_EXAMPLES", "400"))  # examples per fuzzing test
CODES = {"bad_request", "unauthenticated", "forbidden", "not_found", "conflict", "too_large", "rate_limited"}
CODECS = [JsonCodec(max_depth=16), MsgpackCodec(max_depth=16)]


# The decoder


@settings(max_examples=BUDGET * 5, deadline=None)
@given(data=st.binary(max_size=512), text=st.booleans())
def test_any_bytes_decode_to_a_map_or_a_protocol_violation(data: bytes, text: bool) -> None:
    """Arbitrary bytes, as either frame type, in either encoding: a map, or ProtocolViolation;
    and the id read off a frame's first bytes is an integer in range, or None."""
    for codec in CODECS:
        try:
            assert isinstance(codec.decode(text, data), dict)
        except ProtocolViolation:
            pass
        found = peek_id(codec, data)
        assert found is None or 0 <= found <= 2**53 - 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=40,
)  # fmt: skip


@settings(max_examples=BUDGET * 2, deadline=None)
@given(value=st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_a_map_round_trips_through_each_codec_or_is_refused_for_its_depth(value: dict[str, Any]) -> None:
    """Every map a client can write decodes back to itself, unless it nests deeper than 16."""
    for codec in CODECS:
        try:
            decoded = codec.decode(codec is CODECS[0], codec.encode(value))
        except ProtocolViolation as exc:
            assert "nesting" in str(exc)
        else:
            assert decoded == value


# Every command against a real server


class Hearth:
    """`hearth serve` in its own process, for synchronous clients (hypothesis drives sync tests)."""

    def __init__(self, data_dir: Path) -> None:
        self.env = {
            **os.environ,
            "HEARTH_DATA_DIR": str(data_dir),
            "HEARTH_SECRET_KEY": "fuzz-secret",
            "HEARTH_RATE": "100000",
            "HEARTH_BURST": "100000",
            "HEARTH_USER_RATE": "100000",
            "HEARTH_USER_BURST": "100000",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "serve", "--port", "0"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        self.log: list[str] = []
        self.port = 0
        while not self.port:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("hearth serve exited:\n" + "".join(self.log))
            self.log.append(line)
            if match := re.search(r"running on http://127\.0\.0\.1:(\d+)", line):
                self.port = int(match.group(1))
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def hearth(self, *args: str, stdin: str = "") -> str:
        out = subprocess.run(
            [sys.executable, "-m", "server.cli", *args], env=self.env, input=stdin, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def stop(self) -> str:
        self.http.close()
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return "".join(self.log) + err


class Player:
    """A signed-in socket of one account, in the room; reconnected if the fuzzing closes it."""

    def __init__(self, hearth: Hearth, token: str, room: str, sockets: contextlib.ExitStack) -> None:
        self.hearth, self.token, self.room, self.sockets = hearth, token, room, sockets
        self.ids = 0
        self.ws = self.connect()

    def connect(self) -> ClientConnection:
        url = f"ws://127.0.0.1:{self.hearth.port}/ws"
        ws = self.sockets.enter_context(connect(url, subprotocols=["hearth.v1.json"], open_timeout=10))  # type: ignore[list-item]
        self.ws = ws
        assert "result" in self.request("auth", token=self.token)
        self.request("join", room=self.room)
        return ws

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a command; return its reply (events on the way are skipped)."""
        self.ids += 1
        self.ws.send(orjson.dumps({"id": self.ids, "op": op, **args}).decode())
        while True:
            message: dict[str, Any] = orjson.loads(self.ws.recv(timeout=10))
            if message.get("id") == self.ids:
                return message
            assert "ev" in message, message  # a reply to nothing we asked


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A group room with a live session in its lobby: its facilitator and a member, each on a socket."""
    hearth = Hearth(tmp_path_factory.mktemp("fuzz"))
    sockets = contextlib.ExitStack()
    try:
        for username, role in (("lead", "facilitator"), ("admin", "admin")):
            hearth.hearth("user", "create", username, "--role", role, "--password-stdin", stdin="correct horse\n")
        lead, admin = (
            hearth.http.post("/api/login", json={"username": name, "password": "correct horse"}).json()
            for name in ("lead", "admin")
        )
        body = {"username": "member", "password": "correct horse", "display_name": "Member"}
        member = hearth.http.post("/api/signup", json=body).json()
        headers = {"Authorization": f"Bearer {lead['token']}"}
        made = hearth.http.post(
            "/api/communities", json={"name": "Circles", "join": "open"},
            headers={"Authorization": f"Bearer {admin['token']}"},
        ).json()  # fmt: skip
        community = made["community"]["id"]
        cards = [
            hearth.http.post(
                f"/api/communities/{community}/members", json={"display_name": name},
                headers={"Authorization": f"Bearer {who['token']}"},
            ).json()["member"]["id"]
            for who, name in ((lead, "Lead"), (member, "Member"))
        ]  # fmt: skip
        body = {"name": "Circle", "kind": "group", "community": community}
        room_id = hearth.http.post("/api/rooms", json=body, headers=headers).json()["room"]["id"]
        hearth.http.post(f"/api/rooms/{room_id}/members", json={"member": cards[1]}, headers=headers)
        players = [Player(hearth, lead["token"], room_id, sockets), Player(hearth, member["token"], room_id, sockets)]
        players[0].request("session", room=room_id, action="open", title="Circle")
        ids = [room_id, *cards, lead["user"]["id"], member["user"]["id"], "r_000000000000", "m_000000000000"]
        yield {"hearth": hearth, "players": players, "ids": ids}
    finally:
        sockets.close()
        log = hearth.stop()
    failures = [line for line in log.splitlines() if re.search(r"Traceback|op failed|reader failed|ERROR", line)]
    assert not failures, "\n".join(failures)


ARGUMENTS = (
    "room", "since", "on_duty", "text", "client_id", "reply_to", "target", "emoji", "remove", "before", "limit",
    "action", "minutes", "title", "agreement", "co_facilitators", "capacity", "kind", "on", "user", "message",
    "up", "seconds", "order", "muted", "mood", "word", "pass", "token",
)  # fmt: skip
ACTIONS = ("open", "start", "end", "lock", "unlock", "floor_only", "pin", "lead", "give", "take", "pass", "order")


def argument_maps(ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    likely = st.sampled_from(ids) | st.sampled_from(ACTIONS) | st.integers(-2, 2**53) | st.text(max_size=4100)
    value = likely | json_values
    return st.dictionaries(st.sampled_from(ARGUMENTS) | st.text(max_size=8), value, max_size=6)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_every_command_with_any_arguments_gets_a_result_or_a_clean_error(stage: dict[str, Any]) -> None:
    """Every op, as the session's facilitator and as a member, with arbitrary arguments (the
    room's and the people's real ids among them): a result, or an error with a protocol
    code other than `internal`, and the socket stays open (or closes with a code that says
    why: 4403 for a member the fuzzing removed from the session)."""
    players: list[Player] = stage["players"]

    @settings(max_examples=BUDGET * 3, deadline=None, suppress_health_check=list(HealthCheck))
    @given(op=st.sampled_from(sorted(OPS)), args=argument_maps(stage["ids"]), who=st.sampled_from([0, 1]))
    def run(op: str, args: dict[str, Any], who: int) -> None:
        player = players[who]
        args = {k: v for k, v in args.items() if k not in ("id", "op")}
        try:
            reply = player.request(op, **args)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4403, closed
            player.connect()
            return
        assert ("result" in reply) != ("error" in reply), reply
        if "error" in reply:
            assert reply["error"]["code"] in CODES, reply

    run()


def test_msgpack_frames_of_any_shape_are_answered_or_closed_cleanly(stage: dict[str, Any]) -> None:
    """Arbitrary msgpack maps as commands (binary keys, nested extension-free values): a reply
    or a 4400 close, never a stalled or crashed connection."""
    hearth: Hearth = stage["hearth"]

    @settings(max_examples=BUDGET, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frame=st.dictionaries(st.text(max_size=6) | st.sampled_from(["id", "op"]), json_values, max_size=6))
    def run(frame: dict[str, Any]) -> None:
        with connect(
            f"ws://127.0.0.1:{hearth.port}/ws",
            subprotocols=["hearth.v1.msgpack"],
            open_timeout=10,  # type: ignore[list-item]
        ) as ws:
            ws.send(msgpack.packb(frame, use_bin_type=True))
            with pytest.raises(ConnectionClosed) as closed:  # a first frame that is not a good `auth` closes
                ws.recv(timeout=10)  # a reply, or already the close
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code in (4400, 4401), closed.value

    run()
