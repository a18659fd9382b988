"""Wire encodings: `hearth.v1.json` (text frames) and `hearth.v1.msgpack` (binary frames).

A codec turns one frame into one map and back; `frame()` gives the whole websocket frame,
header included, so fan-out frames an event once per encoding and writes the same bytes to
every member. Decoding is strict: anything that is not a
map of plain values (NaN, Infinity, msgpack extension types, too deep nesting, invalid
UTF-8, the other encoding's frame type) is a `ProtocolViolation`, answered with close 4400.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from typing import Any, Final

import msgpack
import orjson

JSON_PROTOCOL: Final = "hearth.v1.json"
MSGPACK_PROTOCOL: Final = "hearth.v1.msgpack"
PROTOCOLS: Final = frozenset({JSON_PROTOCOL, MSGPACK_PROTOCOL})


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

    def decode(self, text: bool, frame: bytes) -> dict[str, Any]:
        """The map in a frame's bytes (orjson reads UTF-8 bytes directly, and refuses invalid UTF-8)."""
        if not text:
            raise ProtocolViolation("binary frame on a JSON connection")
        try:
            value = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise ProtocolViolation("invalid JSON") from exc
        if not isinstance(value, dict):
            raise ProtocolViolation("frame is not a map")
        _check_depth(value, self.max_depth)
        return value

    @staticmethod
    def encode(message: Mapping[str, Any]) -> bytes:
        return orjson.dumps(message)

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

    def decode(self, text: bool, frame: bytes) -> dict[str, Any]:
        if text:
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

    @staticmethod
    def encode(message: Mapping[str, Any]) -> bytes:
        data: bytes = msgpack.packb(message, use_bin_type=True)
        return data

    def frame(self, message: Mapping[str, Any]) -> bytes:
        return websocket_frame(BINARY, msgpack.packb(message, use_bin_type=True))


Codec = JsonCodec | MsgpackCodec


def make_codecs(*, max_depth: int) -> dict[str, Codec]:
    """One instance of each codec, shared by every connection (fan-out encodes once per codec)."""
    return {JSON_PROTOCOL: JsonCodec(max_depth=max_depth), MSGPACK_PROTOCOL: MsgpackCodec(max_depth=max_depth)}


_JSON_ID = re.compile(rb'\s*\{\s*"id"\s*:\s*(\d{1,16})\s*[,}]')
_MSGPACK_MAP = frozenset(range(0x81, 0x90)) | {0xDE, 0xDF}
_MSGPACK_UINT = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


def peek_id(codec: Codec, frame: bytes) -> int | None:
    """A frame's command id, read without decoding the frame: when `id` is its first key
    (as clients write it) and a plain integer; else None. For the reply to a frame that is
    refused before it is decoded (too large, or over the rate), at a cost that does not
    grow with the frame."""
    if codec.name == JSON_PROTOCOL:
        match = _JSON_ID.match(frame, 0, 64)
        value = int(match.group(1)) if match else None
    else:
        head = 1 if frame[:1] and frame[0] < 0xDE else 3 if frame[:1] == b"\xde" else 5
        if not frame or frame[0] not in _MSGPACK_MAP or frame[head : head + 3] != b"\xa2id":
            return None
        marker = frame[head + 3 : head + 4]
        if not marker:
            return None
        if marker[0] < 0x80:
            value = marker[0]
        elif (width := _MSGPACK_UINT.get(marker[0])) is not None:
            raw = frame[head + 4 : head + 4 + width]
            value = int.from_bytes(raw, "big") if len(raw) == width else None
        else:
            return None
    return value if value is not None and value <= 2**53 - 1 else None
