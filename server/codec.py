"""Wire encodings: `hearth.v1.json` (text frames) and `hearth.v1.msgpack` (binary frames).

A codec turns one frame into one map and back; `frame()` gives the whole websocket frame,
header included, so fan-out frames an event once per encoding and writes the same bytes to
every member. Decoding is strict: anything that is not a
map of plain values (NaN, Infinity, msgpack extension types, too deep nesting, invalid
UTF-8, the other encoding's frame type) is a `ProtocolViolation`, answered with close 4400.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgpack
import orjson

JSON_PROTOCOL: Final = "hearth.v1.json"
MSGPACK_PROTOCOL: Final = "hearth.v1.msgpack"


TEXT: Final = 0x1  # websocket opcodes (RFC 6455 §5.2)
BINARY: Final = 0x2


def websocket_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked websocket frame (a server's frames are never masked)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


class ProtocolViolation(Exception):
    """A frame that cannot be read as one command map."""


def _check_depth(value: object, max_depth: int) -> None:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        elif isinstance(item, msgpack.Timestamp):
            raise ProtocolViolation("msgpack extension types are not accepted")
        else:
            continue
        if depth > max_depth:
            raise ProtocolViolation(f"nesting deeper than {max_depth}")
        stack.extend((child, depth + 1) for child in children)


class JsonCodec:
    """UTF-8 JSON in text frames (RFC 8259: no NaN or Infinity)."""

    name: Final = JSON_PROTOCOL

    def __init__(self, *, max_depth: int) -> None:
        self.max_depth = max_depth

    def decode(self, frame: str | bytes) -> dict[str, Any]:
        if not isinstance(frame, str):
            raise ProtocolViolation("binary frame on a JSON connection")
        try:
            value = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ProtocolViolation("invalid JSON") from exc
        if not isinstance(value, dict):
            raise ProtocolViolation("frame is not a map")
        _check_depth(value, self.max_depth)
        return value

    def frame(self, message: Mapping[str, Any]) -> bytes:
        return websocket_frame(TEXT, orjson.dumps(message))


class MsgpackCodec:
    """MessagePack in binary frames; string keys, no extension types."""

    name: Final = MSGPACK_PROTOCOL

    def __init__(self, *, max_depth: int) -> None:
        self.max_depth = max_depth

    @staticmethod
    def _no_ext(code: int, data: bytes) -> object:
        raise ProtocolViolation("msgpack extension types are not accepted")

    def decode(self, frame: str | bytes) -> dict[str, Any]:
        if not isinstance(frame, bytes):
            raise ProtocolViolation("text frame on a msgpack connection")
        try:
            value = msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=self._no_ext, timestamp=0)
        except ProtocolViolation:
            raise
        except Exception as exc:  # msgpack raises many unrelated types for bad input
            raise ProtocolViolation("invalid msgpack") from exc
        if not isinstance(value, dict):
            raise ProtocolViolation("frame is not a map")
        _check_depth(value, self.max_depth)
        return value

    def frame(self, message: Mapping[str, Any]) -> bytes:
        return websocket_frame(BINARY, msgpack.packb(message, use_bin_type=True))


Codec = JsonCodec | MsgpackCodec


def make_codecs(*, max_depth: int) -> dict[str, Codec]:
    """One instance of each codec, shared by every connection (fan-out encodes once per codec)."""
    return {JSON_PROTOCOL: JsonCodec(max_depth=max_depth), MSGPACK_PROTOCOL: MsgpackCodec(max_depth=max_depth)}


def choose_codec(offered: Sequence[str], codecs: Mapping[str, Codec]) -> Codec | None:
    """The codec for the client's offered subprotocols: the first Hearth knows, JSON when none
    is offered, None when every offer is unknown."""
    if not offered:
        return codecs[JSON_PROTOCOL]
    return next((codecs[name] for name in offered if name in codecs), None)
