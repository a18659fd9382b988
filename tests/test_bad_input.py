"""Bad input: each malformed frame or command gets its exact error or close code, stores
nothing, and leaves everyone else in the room served."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.auth import Tokens
from tests.conftest import (
    JSON,
    MSGPACK,
    TIMEOUT,
    Account,
    Api,
    Client,
    Running,
    open_client,
    start_server,
    test_settings,
)

CLOSE_TOO_BIG, CLOSE_BAD_UTF8 = 1009, 1007
CLOSE_PROTOCOL, CLOSE_UNAUTHENTICATED, CLOSE_TOO_MANY = 4400, 4401, 4429
KIB, MIB = 1024, 1024 * 1024


def other(encoding: str) -> str:
    return MSGPACK if encoding == JSON else JSON


def pack(encoding: str, message: Any) -> str | bytes:
    """`message` encoded as a frame of `encoding`, whatever it is (not only maps)."""
    if encoding == MSGPACK:
        data: bytes = msgpack.packb(message, use_bin_type=True)
        return data
    return orjson.dumps(message).decode()


def nested(depth: int) -> Any:
    """`depth` levels of lists, innermost holding a number."""
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def is_reply(frame: dict[str, Any]) -> bool:
    """Whether a frame nobody waits for is a reply (with `"id": null`) rather than an event."""
    return "ev" not in frame


async def unreplied(client: Client) -> dict[str, Any]:
    """The next frame that is neither an event nor a reply someone waits for: an `"id": null` reply."""
    return await client.event(where=is_reply)


async def own_message(client: Client, room: str, client_id: str) -> dict[str, Any]:
    """The `message` event for the client's own send `client_id`."""
    while True:
        event = await client.event("message", room=room)
        if event.get("client_id") == client_id:
            return event


async def send_raw(client: Client, frame: str | bytes, *, text: bool | None = None) -> None:
    """Send one frame as is; the server may already be closing, which is fine."""
    try:
        await client.ws.send(frame, text=text)
    except ConnectionClosed:
        pass


class Witness:
    """A healthy client joined to the room: it checks that nothing was stored and that it is still served."""

    def __init__(self, client: Client, room: str) -> None:
        self.client = client
        self.room = room
        self.before: list[dict[str, Any]] = []

    async def history(self) -> list[dict[str, Any]]:
        result = await self.client.call("history", room=self.room, limit=100)
        events: list[dict[str, Any]] = result["events"]
        return events

    async def snapshot(self) -> None:
        self.before = await self.history()

    async def check(self, stored: int | None = 0) -> list[dict[str, Any]]:
        """Ping and send still work; then the history is what it was plus exactly `stored` events (none
        unless told; None: any number) and the witness's message, with no seq used up behind its back.
        Returns the new events other than the witness's.

        The witness's own message event comes after every earlier commit of the room (seqs are gapless
        and delivered in order), so history read after it sees all that a bad command could have stored."""
        assert "ts" in await self.client.call("ping")
        cid = "w-" + secrets.token_hex(6)
        sent = await self.client.call("send", room=self.room, text="Still here", client_id=cid)
        event = await own_message(self.client, self.room, cid)
        assert sent["seq"] == event["seq"]
        after = await self.history()
        assert after[: len(self.before)] == self.before, "a bad command changed the room's history"
        new, mine = after[len(self.before) : -1], after[-1]
        assert stored is None or len(new) == stored, new
        assert mine["client_id"] == cid and mine["seq"] == sent["seq"]
        seqs = [e["seq"] for e in after]
        assert seqs == list(range(1, len(seqs) + 1)), "seqs start at 1 with no gap"
        assert len(after) < 100, "the room outgrew one history page"
        self.before = after
        return new


@dataclass
class Scene:
    """A drop-in room with a witness in it (in the other encoding) and a first message, seq `seed`."""

    running: Running
    api: Api
    clients: list[Client]
    encoding: str
    room: str
    staff: Account
    witness: Witness
    seed: int

    async def offender(self, *, join: bool = True, encoding: str | None = None) -> Client:
        """A signed-in caregiver, in the room unless `join` is false."""
        account = await self.api.signup("caregiver")
        client = await open_client(self.running, account, encoding or self.encoding)
        self.clients.append(client)
        if join:
            await client.call("join", room=self.room)
        return client

    async def stranger(self, encoding: str | None = None, **connect_args: Any) -> Client:
        """A connection that has not authenticated."""
        client = await open_client(self.running, None, encoding or self.encoding, **connect_args)
        self.clients.append(client)
        return client


async def make_scene(running: Running, api: Api, clients: list[Client], encoding: str, *, seed: bool = True) -> Scene:
    staff = await api.staff()
    room = await api.room(staff)
    account = await api.signup("caregiver")
    client = await open_client(running, account, other(encoding))
    clients.append(client)
    await client.call("join", room=room)
    seq = 0
    if seed:
        seq = (await client.call("send", room=room, text="Welcome, everyone.", client_id="seed"))["seq"]
        await own_message(client, room, "seed")
    witness = Witness(client, room)
    await witness.snapshot()
    return Scene(running, api, clients, encoding, room, staff, witness, seq)


@pytest.fixture
async def scene(server: Running, api: Api, clients: list[Client], encoding: str) -> Scene:
    return await make_scene(server, api, clients, encoding)


@pytest.fixture
async def json_scene(server: Running, api: Api, clients: list[Client]) -> Scene:
    return await make_scene(server, api, clients, JSON)


@pytest.fixture
async def msgpack_scene(server: Running, api: Api, clients: list[Client]) -> Scene:
    return await make_scene(server, api, clients, MSGPACK)


async def expect_close(scene: Scene, client: Client, frame: str | bytes, code: int) -> None:
    """Send `frame`; the server closes with `code`, sends no reply, and the room is unharmed."""
    await send_raw(client, frame)
    assert await client.close_code() == code
    assert client.replies == {}
    await client.no_event(where=is_reply, within=0)  # no reply to a frame that closes the connection
    await scene.witness.check()


async def expect_error(scene: Scene, client: Client, code: str, op: str, **args: Any) -> dict[str, Any]:
    """Send a command; it fails with `code`, the connection stays usable and the room is unharmed."""
    error = await client.error(op, **args)
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert "ts" in await client.call("ping")
    await scene.witness.check()
    return error


# Frames that are not one decodable map: close 4400


@pytest.mark.parametrize(
    ("encoding", "value"),
    [
        (JSON, [1, 2]),
        (JSON, "ping"),
        (JSON, 7),
        (JSON, None),
        (MSGPACK, 7),
        (MSGPACK, ["id", 1, "op", "ping"]),
        (MSGPACK, "ping"),
        (MSGPACK, None),
    ],
)
async def test_a_frame_that_is_not_a_map_closes_with_4400(scene: Scene, encoding: str, value: Any) -> None:
    """A list, a string, a number or null as the whole frame closes the connection with 4400."""
    client = await scene.offender()
    await expect_close(scene, client, pack(encoding, value), CLOSE_PROTOCOL)


@pytest.mark.parametrize(
    "frame",
    ['{"id": 1, "op": "ping"', "{'id': 1, 'op': 'ping'}", '{"id": 1, "op": "ping",}', "", "ping", '{"id": 01}'],
)
async def test_invalid_json_closes_with_4400(json_scene: Scene, frame: str) -> None:
    """Truncated JSON, single quotes, a trailing comma, an empty frame or a bare word closes with 4400."""
    client = await json_scene.offender()
    await expect_close(json_scene, client, frame, CLOSE_PROTOCOL)


@pytest.mark.parametrize("frame", [b"\xc1", b"\x82\xa2id\x01", b"", b"\x81\xa2id\x01\x00"])
async def test_invalid_msgpack_closes_with_4400(msgpack_scene: Scene, frame: bytes) -> None:
    """A reserved byte, a truncated map, an empty frame or trailing bytes closes with 4400."""
    client = await msgpack_scene.offender()
    await expect_close(msgpack_scene, client, frame, CLOSE_PROTOCOL)


async def test_a_text_frame_on_a_msgpack_connection_closes_with_4400(msgpack_scene: Scene) -> None:
    """A well-formed JSON command in a text frame is still a violation on a msgpack connection."""
    client = await msgpack_scene.offender()
    await expect_close(msgpack_scene, client, '{"id": 1, "op": "ping"}', CLOSE_PROTOCOL)


async def test_a_binary_frame_on_a_json_connection_closes_with_4400(json_scene: Scene) -> None:
    """A binary frame, even one holding JSON, is a violation on a JSON connection."""
    client = await json_scene.offender()
    await expect_close(json_scene, client, b'{"id": 1, "op": "ping"}', CLOSE_PROTOCOL)


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(scene: Scene) -> None:
    """A text frame that is not valid UTF-8 is refused by the websocket layer with 1007."""
    client = await scene.offender()
    await send_raw(client, b'{"id": 1, "op": "ping", "x": "\xff\xfe"}', text=True)
    assert await client.close_code() == CLOSE_BAD_UTF8
    await scene.witness.check()


@pytest.mark.parametrize("shape", ["lists", "maps"])
async def test_nesting_deeper_than_16_levels_closes_with_4400(scene: Scene, shape: str) -> None:
    """A command with 17 levels of maps or lists closes with 4400 (16 levels are fine)."""
    client = await scene.offender()

    def deep(depth: int) -> Any:
        if shape == "lists":
            return nested(depth)
        value: Any = 1
        for _ in range(depth):
            value = {"x": value}
        return value

    assert "ts" in await client.call("ping", x=deep(15))  # the frame itself is level 1
    await expect_close(scene, client, pack(scene.encoding, {"id": 99, "op": "ping", "x": deep(16)}), CLOSE_PROTOCOL)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_nan_or_infinity_in_json_closes_with_4400(json_scene: Scene, literal: str) -> None:
    """JSON has no NaN or Infinity; a frame using them closes with 4400."""
    client = await json_scene.offender()
    await expect_close(json_scene, client, '{"id": 1, "op": "ping", "x": ' + literal + "}", CLOSE_PROTOCOL)


async def test_a_lone_surrogate_escape_in_json_closes_with_4400(json_scene: Scene) -> None:
    """`\\ud800` without its low half is not a character; the frame closes with 4400."""
    client = await json_scene.offender()
    frame = (
        '{"id": 1, "op": "send", "room": '
        + orjson.dumps(json_scene.room).decode()
        + ', "text": "hi \\ud800", "client_id": "c1"}'
    )
    await expect_close(json_scene, client, frame, CLOSE_PROTOCOL)


async def test_a_msgpack_extension_type_closes_with_4400(msgpack_scene: Scene) -> None:
    """A msgpack extension value anywhere in the frame closes with 4400."""
    client = await msgpack_scene.offender()
    frame = msgpack.packb({"id": 1, "op": "ping", "x": msgpack.ExtType(5, b"data")}, use_bin_type=True)
    await expect_close(msgpack_scene, client, frame, CLOSE_PROTOCOL)


async def test_a_msgpack_timestamp_extension_closes_with_4400(msgpack_scene: Scene) -> None:
    """The msgpack timestamp (extension type -1) is an extension type too: close 4400."""
    client = await msgpack_scene.offender()
    frame = msgpack.packb({"id": 1, "op": "ping", "x": msgpack.Timestamp(1, 0)}, use_bin_type=True)
    await expect_close(msgpack_scene, client, frame, CLOSE_PROTOCOL)


async def test_a_msgpack_string_with_invalid_utf8_closes_with_4400(msgpack_scene: Scene) -> None:
    """A msgpack str whose bytes are not UTF-8 closes with 4400."""
    client = await msgpack_scene.offender()
    good = msgpack.packb({"id": 1, "op": "ping", "x": "\u00e9\u00e9"}, use_bin_type=True)
    bad = good.replace("\u00e9\u00e9".encode(), b"\xff\xfe\xff\xfe")
    await expect_close(msgpack_scene, client, bad, CLOSE_PROTOCOL)


async def test_a_msgpack_map_with_an_integer_key_closes_with_4400(msgpack_scene: Scene) -> None:
    """Map keys are strings; an integer key closes with 4400."""
    client = await msgpack_scene.offender()
    frame = msgpack.packb({"id": 1, "op": "ping", 5: "x"}, use_bin_type=True)
    await expect_close(msgpack_scene, client, frame, CLOSE_PROTOCOL)


@pytest.mark.parametrize("offered", [["hearth.v9.json"], ["json", "chat"]])
async def test_an_unknown_subprotocol_closes_with_4400(scene: Scene, offered: list[str]) -> None:
    """Offering only encodings Hearth does not know is answered with close 4400."""
    ws = await connect(scene.running.ws_url, subprotocols=offered, compression=None, open_timeout=TIMEOUT)  # type: ignore[arg-type]
    try:
        assert ws.subprotocol is None
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == CLOSE_PROTOCOL
    finally:
        await ws.close()
    await scene.witness.check()


# Size limits


async def test_a_frame_over_64_kib_is_too_large_and_the_connection_stays_usable(scene: Scene) -> None:
    """A command frame over 64 KiB (under 1 MiB) is answered too_large with its id and stores nothing."""
    client = await scene.offender()
    error = await expect_error(
        scene, client, "too_large", "send", room=scene.room, text="a" * (70 * KIB), client_id="big"
    )
    assert "65536" in error["message"]
    cid = "after-big"
    await client.call("send", room=scene.room, text="Sorry, shorter now.", client_id=cid)
    assert (await own_message(client, scene.room, cid))["text"] == "Sorry, shorter now."


async def test_an_undecodable_frame_over_64_kib_is_too_large_with_a_null_id(scene: Scene) -> None:
    """An oversized frame that cannot be decoded gets too_large with id null, not a close."""
    client = await scene.offender()
    junk: str | bytes = "[" * 10 + "x" * (100 * KIB) if scene.encoding == JSON else b"\xc1" * (100 * KIB)
    await send_raw(client, junk)
    reply = await unreplied(client)
    assert reply["id"] is None and reply["error"]["code"] == "too_large"
    assert "ts" in await client.call("ping")
    await scene.witness.check()


async def test_a_frame_over_1_mib_closes_with_1009(scene: Scene) -> None:
    """A frame over the hard 1 MiB limit is refused by the websocket layer with 1009."""
    client = await scene.offender()
    frame = pack(scene.encoding, {"id": 1, "op": "send", "room": scene.room, "text": "a" * MIB, "client_id": "huge"})
    await send_raw(client, frame)
    assert await client.close_code() == CLOSE_TOO_BIG
    await scene.witness.check()


# Command ids and ops


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "ping"},
        {"id": "7", "op": "ping"},
        {"id": -1, "op": "ping"},
        {"id": 1.5, "op": "ping"},
        {"id": True, "op": "ping"},
        {"id": None, "op": "ping"},
        {"id": [1], "op": "ping"},
        {"id": 2**53, "op": "ping"},
    ],
    ids=["missing", "string", "negative", "float", "bool", "null", "list", "over-2**53"],
)
async def test_a_command_without_a_valid_id_is_a_bad_request_with_a_null_id(
    scene: Scene, frame: dict[str, Any]
) -> None:
    """The reply to a command whose id is not a non-negative integer carries id null and bad_request."""
    client = await scene.offender()
    await send_raw(client, pack(scene.encoding, frame))
    reply = await unreplied(client)
    assert reply == {"id": None, "error": {"code": "bad_request", "message": reply["error"]["message"]}}
    assert "ts" in await client.call("ping")
    await scene.witness.check()


async def test_a_send_without_a_valid_id_stores_nothing(scene: Scene) -> None:
    """A send with a string id is refused before it reaches the room."""
    client = await scene.offender()
    await send_raw(client, pack(scene.encoding, {"id": "1", "op": "send", "room": scene.room, "text": "x"}))
    assert (await unreplied(client))["error"]["code"] == "bad_request"
    await scene.witness.check()


@pytest.mark.parametrize("op", ["shout", "SEND", "", "send "])
async def test_an_unknown_op_is_a_bad_request(scene: Scene, op: str) -> None:
    """An op Hearth does not know is a bad_request."""
    client = await scene.offender()
    await expect_error(scene, client, "bad_request", op, room=scene.room, text="hi", client_id="c1")


@pytest.mark.parametrize("op", [5, None, ["send"], {"name": "send"}, True])
async def test_an_op_that_is_not_a_string_is_a_bad_request(scene: Scene, op: Any) -> None:
    """An op that is a number, null, a list, a map or a boolean is a bad_request naming `op`."""
    client = await scene.offender()
    # the Client helper only sends string ops, so wait for this reply by its id
    future = client.reply_to(41)
    await send_raw(client, pack(scene.encoding, {"id": 41, "op": op, "room": scene.room, "text": "x"}))
    reply = await asyncio.wait_for(future, TIMEOUT)
    assert reply["id"] == 41 and reply["error"]["code"] == "bad_request" and "op" in reply["error"]["message"]
    await scene.witness.check()


async def test_a_command_without_an_op_is_a_bad_request(scene: Scene) -> None:
    """A map with an id but no op is a bad_request."""
    client = await scene.offender()
    future = client.reply_to(42)
    await send_raw(client, pack(scene.encoding, {"id": 42, "room": scene.room}))
    reply = await asyncio.wait_for(future, TIMEOUT)
    assert reply["error"]["code"] == "bad_request"
    await scene.witness.check()


# Rooms


@pytest.mark.parametrize("op", ["join", "send", "history", "leave"])
@pytest.mark.parametrize("room", [None, 5, ["r"], {"id": "r"}, True, "r" * 65], ids=repr)
async def test_a_missing_or_non_string_room_is_a_bad_request(scene: Scene, op: str, room: Any) -> None:
    """`room` missing, not a string, or over 64 characters is a bad_request."""
    client = await scene.offender()
    args: dict[str, Any] = {"text": "hi", "client_id": "c1"}
    if room is not None:
        args["room"] = room
    await expect_error(scene, client, "bad_request", op, **args)


@pytest.mark.parametrize("room", ["no-such-room", "0", "r" * 64])
async def test_joining_an_unknown_room_is_not_found(scene: Scene, room: str) -> None:
    """Joining a room id that does not exist is not_found, and the client is in no room afterwards."""
    client = await scene.offender(join=False)
    await expect_error(scene, client, "not_found", "join", room=room)
    assert (await client.error("send", room=room, text="hi", client_id="c1"))["code"] == "forbidden"


async def test_joining_a_group_one_is_not_a_member_of_is_forbidden(scene: Scene) -> None:
    """A group room is for its members: anyone else gets forbidden."""
    group = await scene.api.room(scene.staff, kind="group", name="Tuesday group")
    client = await scene.offender(join=False)
    await expect_error(scene, client, "forbidden", "join", room=group)


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("send", {"text": "hi", "client_id": "c1"}),
        ("history", {"limit": 10}),
        ("typing", {}),
        ("leave", {}),
        ("edit", {"target": 1, "text": "changed"}),
        ("delete", {"target": 1}),
        ("react", {"target": 1, "emoji": "+1"}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_commands_on_a_room_not_joined_are_forbidden(scene: Scene, op: str, args: dict[str, Any]) -> None:
    """send, history, typing, leave, edit, delete and react need the room to be joined first."""
    client = await scene.offender(join=False)
    await expect_error(scene, client, "forbidden", op, room=scene.room, **args)


async def test_sending_after_leaving_is_forbidden(scene: Scene) -> None:
    """After `leave`, the room is no longer joined: send is forbidden."""
    client = await scene.offender()
    assert await client.call("leave", room=scene.room) == {}
    await expect_error(scene, client, "forbidden", "send", room=scene.room, text="hi", client_id="c1")


# Message text


@pytest.mark.parametrize("text", [None, 5, ["hi"], {"t": "hi"}, True, 1.5], ids=repr)
async def test_a_missing_or_non_string_text_is_a_bad_request(scene: Scene, text: Any) -> None:
    """`text` missing, or a number, list, map, boolean or float, is a bad_request."""
    client = await scene.offender()
    args: dict[str, Any] = {"room": scene.room, "client_id": "c1"}
    if text is not None:
        args["text"] = text
    await expect_error(scene, client, "bad_request", "send", **args)


async def test_text_as_msgpack_bytes_is_a_bad_request(msgpack_scene: Scene) -> None:
    """On msgpack, a bin value is not a string: bad_request."""
    client = await msgpack_scene.offender()
    await expect_error(msgpack_scene, client, "bad_request", "send", room=msgpack_scene.room, text=b"hi", client_id="c")


@pytest.mark.parametrize("length", [4001, 5000, 60 * KIB])
async def test_text_over_4000_characters_is_too_large(scene: Scene, length: int) -> None:
    """A message of more than 4000 characters (in a frame under 64 KiB) is too_large."""
    client = await scene.offender()
    await expect_error(scene, client, "too_large", "send", room=scene.room, text="x" * length, client_id="long")


async def test_text_over_4000_characters_counts_characters_not_bytes(scene: Scene) -> None:
    """4001 two-byte characters are too_large even though 4000 would be accepted."""
    client = await scene.offender()
    await expect_error(scene, client, "too_large", "send", room=scene.room, text="\u00e9" * 4001, client_id="long")


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n", "\u00a0\u2003\u3000"], ids=repr)
async def test_empty_or_whitespace_text_is_a_bad_request(scene: Scene, text: str) -> None:
    """A message that is empty or only whitespace (Unicode spaces included) is a bad_request."""
    client = await scene.offender()
    await expect_error(scene, client, "bad_request", "send", room=scene.room, text=text, client_id="c1")


@pytest.mark.parametrize("text", ["\x00", "hello\x00world", "\x1b[31mred", "bell\x07", "del\x7f", "vt\x0b"], ids=repr)
async def test_text_containing_a_nul_byte_or_control_character_is_a_bad_request(scene: Scene, text: str) -> None:
    """NUL and other control characters (but tab and newline) are refused in text."""
    client = await scene.offender()
    await expect_error(scene, client, "bad_request", "send", room=scene.room, text=text, client_id="c1")


# client_id


@pytest.mark.parametrize(
    "client_id", [None, "has space", "x" * 65, "", "\u00e9t\u00e9", "a/b", "tab\there", 5, True], ids=repr
)
async def test_a_missing_or_malformed_client_id_is_a_bad_request(scene: Scene, client_id: Any) -> None:
    """client_id is 1 to 64 letters, digits or `. _ : -`; anything else (or nothing) is a bad_request."""
    client = await scene.offender()
    args: dict[str, Any] = {"room": scene.room, "text": "hi"}
    if client_id is not None:
        args["client_id"] = client_id
    await expect_error(scene, client, "bad_request", "send", **args)


# reply_to


@pytest.mark.parametrize("reply_to", [0, -1, "1", 1.0, True, "beyond", "far"], ids=repr)
async def test_a_malformed_reply_to_is_a_bad_request(scene: Scene, reply_to: Any) -> None:
    """reply_to must be the seq of a message of this room: 0, negatives, strings, floats and seqs beyond
    the latest are bad_request."""
    client = await scene.offender()
    if reply_to == "beyond":
        reply_to = scene.seed + 1
    elif reply_to == "far":
        reply_to = 2**53 - 1
    await expect_error(
        scene, client, "bad_request", "send", room=scene.room, text="hi", client_id="c1", reply_to=reply_to
    )


# history and join arguments


@pytest.mark.parametrize("limit", [0, 101, -1, 10**6])
async def test_a_history_limit_out_of_range_is_a_bad_request(scene: Scene, limit: int) -> None:
    """history's limit is 1 to 100."""
    client = await scene.offender()
    await expect_error(scene, client, "bad_request", "history", room=scene.room, limit=limit)


@pytest.mark.parametrize("limit", [10.0, 10.5, "10", True, [10]], ids=repr)
async def test_a_history_limit_that_is_not_an_integer_is_a_bad_request(scene: Scene, limit: Any) -> None:
    """history's limit must be an integer, not a float (even 10.0), a string or a boolean."""
    client = await scene.offender()
    await expect_error(scene, client, "bad_request", "history", room=scene.room, limit=limit)


@pytest.mark.parametrize("before", [0, -5, "3", 2.0], ids=repr)
async def test_history_before_zero_negative_or_not_an_integer_is_a_bad_request(scene: Scene, before: Any) -> None:
    """history's before is a seq: 1 or more."""
    client = await scene.offender()
    await expect_error(scene, client, "bad_request", "history", room=scene.room, before=before, limit=10)


@pytest.mark.parametrize("ahead", [1, 1000])
async def test_join_since_in_the_future_is_a_bad_request(scene: Scene, ahead: int) -> None:
    """join with since beyond the room's latest seq is a bad_request, and the client has not joined."""
    client = await scene.offender(join=False)
    await expect_error(scene, client, "bad_request", "join", room=scene.room, since=scene.seed + ahead)
    assert (await client.error("typing", room=scene.room))["code"] == "forbidden"
    joined = await client.call("join", room=scene.room, since=scene.seed)
    assert [e["text"] for e in joined["events"]] == ["Still here"]  # only the witness's message since


@pytest.mark.parametrize("since", [-1, "0", 1.5, True], ids=repr)
async def test_join_since_negative_or_not_an_integer_is_a_bad_request(scene: Scene, since: Any) -> None:
    """join's since is a seq, 0 or more."""
    client = await scene.offender(join=False)
    await expect_error(scene, client, "bad_request", "join", room=scene.room, since=since)
    assert (await client.error("typing", room=scene.room))["code"] == "forbidden"


# Authentication


@pytest.mark.parametrize("op", ["ping", "join", "send", "history"])
async def test_a_command_before_auth_closes_with_4401(scene: Scene, op: str) -> None:
    """Anything but auth as the first frame closes with 4401, without a reply."""
    client = await scene.stranger()
    await expect_close(
        scene,
        client,
        pack(scene.encoding, {"id": 1, "op": op, "room": scene.room, "text": "hi"}),
        CLOSE_UNAUTHENTICATED,
    )


@pytest.mark.parametrize("cid", [None, "1", -1])
async def test_an_auth_frame_without_a_valid_id_closes_with_4401(scene: Scene, api: Api, cid: Any) -> None:
    """An auth frame with a good token but no usable id closes with 4401."""
    account = await api.signup("caregiver")
    client = await scene.stranger()
    frame: dict[str, Any] = {"op": "auth", "token": account.token}
    if cid is not None:
        frame["id"] = cid
    await expect_close(scene, client, pack(scene.encoding, frame), CLOSE_UNAUTHENTICATED)


@pytest.mark.parametrize("token", ["garbage", "", 123, None, "a.b.c", "v1..", "v1." + "x" * 600 + ".y"], ids=repr)
async def test_auth_with_a_garbage_token_is_unauthenticated_then_closes_with_4401(scene: Scene, token: Any) -> None:
    """A token that is not one of ours is answered unauthenticated, then the connection closes with 4401."""
    client = await scene.stranger()
    args = {} if token is None else {"token": token}
    error = await client.error("auth", **args)
    assert error["code"] == "unauthenticated"
    assert await client.close_code() == CLOSE_UNAUTHENTICATED
    await scene.witness.check()


def tamper(token: str, how: str, other_token: str) -> str:
    version, payload, signature = token.split(".")
    if how == "signature":
        signature = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    elif how == "payload":
        payload = other_token.split(".")[1]  # someone else's identity, our signature
    elif how == "version":
        version = "v2"
    elif how == "truncated":
        signature = signature[:-1]
    return f"{version}.{payload}.{signature}"


@pytest.mark.parametrize("how", ["signature", "payload", "version", "truncated"])
async def test_auth_with_a_tampered_token_is_unauthenticated_then_closes_with_4401(
    scene: Scene, api: Api, how: str
) -> None:
    """A token whose signature, payload or version was changed is refused, then 4401."""
    mine, theirs = await api.signup("caregiver"), await api.signup("caregiver")
    client = await scene.stranger()
    error = await client.error("auth", token=tamper(mine.token, how, theirs.token))
    assert error["code"] == "unauthenticated"
    assert mine.token not in error["message"]
    assert await client.close_code() == CLOSE_UNAUTHENTICATED
    await scene.witness.check()


async def test_auth_with_an_expired_token_is_unauthenticated_then_closes_with_4401(scene: Scene, api: Api) -> None:
    """A correctly signed token past its expiry is refused, then 4401."""
    account = await api.signup("caregiver")
    secret = scene.running.settings.secret_key
    assert secret is not None
    expired, _ = Tokens(secret.encode(), ttl=-60).issue(account.id)  # type: ignore[arg-type]
    client = await scene.stranger()
    error = await client.error("auth", token=expired)
    assert error["code"] == "unauthenticated" and "expired" in error["message"]
    assert await client.close_code() == CLOSE_UNAUTHENTICATED
    await scene.witness.check()


async def test_a_second_auth_after_success_is_a_conflict(scene: Scene, api: Api) -> None:
    """auth on a signed-in connection is a conflict, even with another user's token; the first user stays."""
    client = await scene.offender()
    someone = await api.signup("caregiver")
    await expect_error(scene, client, "conflict", "auth", token=someone.token)
    await client.call("send", room=scene.room, text="Still me", client_id="me")
    event = await own_message(client, scene.room, "me")
    assert event["from"]["id"] != someone.id


async def test_no_auth_within_the_auth_timeout_closes_with_4401(tmp_path: Path, encoding: str) -> None:
    """A connection that sends nothing is closed with 4401 once auth_timeout (0.5 s) has passed."""
    running = await start_server(test_settings(tmp_path, auth_timeout=0.5))
    api, clients = Api(running), []
    try:
        scene = await make_scene(running, api, clients, encoding)
        client = await scene.stranger()
        started = asyncio.get_running_loop().time()
        assert await client.close_code() == CLOSE_UNAUTHENTICATED
        assert asyncio.get_running_loop().time() - started >= 0.4
        await scene.witness.check()
    finally:
        for client in clients:
            await client.close()
        await api.aclose()
        await running.stop()


# Edits, deletions and reactions


@pytest.mark.parametrize("op", ["edit", "delete"])
async def test_editing_or_deleting_someone_elses_message_is_forbidden(scene: Scene, op: str) -> None:
    """Only the sender may edit or delete a message; the witness's message stays as it was."""
    client = await scene.offender()
    args = {"text": "I rewrote this"} if op == "edit" else {}
    await expect_error(scene, client, "forbidden", op, room=scene.room, target=scene.seed, **args)


@pytest.mark.parametrize("op", ["edit", "delete", "react"])
@pytest.mark.parametrize("target", ["missing", "reaction", "deleted"])
async def test_editing_deleting_or_reacting_to_a_message_that_does_not_exist_is_not_found(
    scene: Scene, op: str, target: str
) -> None:
    """A target seq that is not a live message (none, a reaction, a deleted message) is not_found."""
    client = await scene.offender()
    if target == "missing":
        seq = scene.seed + 1000
    else:
        cid = "setup-" + secrets.token_hex(3)
        seq = (await client.call("send", room=scene.room, text="Mine", client_id=cid))["seq"]
        if target == "reaction":
            seq = (await client.call("react", room=scene.room, target=seq, emoji="+1"))["seq"]
        else:
            await client.call("delete", room=scene.room, target=seq)
        await scene.witness.snapshot()
    args: dict[str, Any] = {"edit": {"text": "changed"}, "delete": {}, "react": {"emoji": "+1"}}[op]
    await expect_error(scene, client, "not_found", op, room=scene.room, target=seq, **args)


@pytest.mark.parametrize("op", ["edit", "delete", "react"])
@pytest.mark.parametrize("target", [0, -1, "1", None], ids=repr)
async def test_a_malformed_target_is_a_bad_request(scene: Scene, op: str, target: Any) -> None:
    """edit, delete and react need a target seq of 1 or more."""
    client = await scene.offender()
    args: dict[str, Any] = {"edit": {"text": "changed"}, "delete": {}, "react": {"emoji": "+1"}}[op]
    if target is not None:
        args["target"] = target
    await expect_error(scene, client, "bad_request", op, room=scene.room, **args)


@pytest.mark.parametrize("text", ["", "  ", "nul\x00", None], ids=repr)
async def test_editing_ones_own_message_to_bad_text_is_a_bad_request(scene: Scene, text: Any) -> None:
    """An edit's text follows the same rules as a message's."""
    client = await scene.offender()
    seq = (await client.call("send", room=scene.room, text="Mine", client_id="mine"))["seq"]
    await scene.witness.snapshot()
    args = {} if text is None else {"text": text}
    await expect_error(scene, client, "bad_request", "edit", room=scene.room, target=seq, **args)


@pytest.mark.parametrize("emoji", ["\U0001f44d \U0001f44d", "a b", " ", "tab\there", "\u3000x", ""], ids=repr)
async def test_reacting_with_an_emoji_containing_spaces_is_a_bad_request(scene: Scene, emoji: str) -> None:
    """A reaction is one emoji or a short word: spaces (or nothing at all) are a bad_request."""
    client = await scene.offender()
    await expect_error(scene, client, "bad_request", "react", room=scene.room, target=scene.seed, emoji=emoji)


@pytest.mark.parametrize(("emoji", "code"), [("x" * 17, "too_large"), ("x" * 65, "bad_request")])
async def test_reacting_with_a_long_emoji_is_refused(scene: Scene, emoji: str, code: str) -> None:
    """A reaction over 16 characters is too_large; one over 64 is refused as an argument."""
    client = await scene.offender()
    await expect_error(scene, client, code, "react", room=scene.room, target=scene.seed, emoji=emoji)


async def test_a_reaction_with_a_non_boolean_remove_is_a_bad_request(scene: Scene) -> None:
    """react's `remove` is true or false, not 1."""
    client = await scene.offender()
    await expect_error(scene, client, "bad_request", "react", room=scene.room, target=scene.seed, emoji="+1", remove=1)


# Rate limit


@pytest.fixture
async def slow_server(tmp_path: Path) -> AsyncIterator[Running]:
    running = await start_server(test_settings(tmp_path, rate=5.0, burst=5.0, strikes=3))
    yield running
    await running.stop()


async def test_a_flood_of_commands_is_rate_limited_then_closed_with_4429(slow_server: Running, encoding: str) -> None:
    """Over the rate, sends are answered rate_limited with retry_after > 0 and not stored; past the strikes the
    connection is closed with 4429. Only the sends that were accepted are in the room."""
    api, clients = Api(slow_server), []
    try:
        scene = await make_scene(slow_server, api, clients, encoding, seed=False)  # the witness spends 2 of 5
        client = await scene.offender()  # the join spends 1 of 5
        futures = {}
        for cid in range(100, 130):
            futures[cid] = client.reply_to(cid)
            frame = {"id": cid, "op": "send", "room": scene.room, "text": f"flood {cid}", "client_id": f"f{cid}"}
            await send_raw(client, pack(encoding, frame))
        assert await client.close_code() == CLOSE_TOO_MANY
        replies = [f.result() for f in futures.values() if f.done()]
        accepted = [r for r in replies if "result" in r]
        limited = [r["error"] for r in replies if "error" in r]
        assert len(limited) >= 3, replies
        assert all(e["code"] == "rate_limited" and e["retry_after"] > 0 for e in limited), limited
        # Sends accepted just before the close are committed, but their acks are dropped with the close.
        stored = await scene.witness.check(stored=None)
        assert stored, "the first sends (within the burst) are stored"
        stored_ids = {e["client_id"] for e in stored}
        assert {f"f{r['id']}" for r in accepted} <= stored_ids
        assert not stored_ids & {f"f{r['id']}" for r in replies if "error" in r}, "a refused send was stored"
        assert len(stored_ids) == len(stored), "no send was stored twice"
    finally:
        for c in clients:
            await c.close()
        await api.aclose()


# Origin


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example"])
async def test_a_disallowed_origin_is_refused_with_403(scene: Scene, origin: str) -> None:
    """A handshake from a foreign Origin is refused with HTTP 403 before any websocket is opened."""
    with pytest.raises(InvalidStatus) as refused:
        await connect(
            scene.running.ws_url,
            subprotocols=[scene.encoding],
            origin=origin,
            open_timeout=TIMEOUT,  # type: ignore[list-item,arg-type]
        )
    assert refused.value.response.status_code == 403
    await scene.witness.check()
