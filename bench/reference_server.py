"""The Python floor: the websockets library's own broadcast, speaking just enough Hearth.

`auth` (any token) -> result; `join` -> result with the room's current seq and no events;
`send` -> ack {seq, ts} and a `message` event to every joined client of the room, encoded
once per encoding. No store, no auth, no limits.  Run: python bench/reference_server.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import msgpack
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

MSGPACK, JSON = Subprotocol("hearth.v1.msgpack"), Subprotocol("hearth.v1.json")
rooms: defaultdict[str, set[ServerConnection]] = defaultdict(set)
seqs: defaultdict[str, int] = defaultdict(int)
USER = {"id": "u_reference", "name": "bench", "role": "patient"}


def encode(ws: ServerConnection, frame: dict[str, Any]) -> str | bytes:
    return msgpack.packb(frame) if ws.subprotocol == MSGPACK else json.dumps(frame)


async def handler(ws: ServerConnection) -> None:
    joined: set[str] = set()
    try:
        async for raw in ws:
            cmd = msgpack.unpackb(raw) if isinstance(raw, bytes) else json.loads(raw)
            op, cid, room = cmd.get("op"), cmd.get("id"), cmd.get("room", "")
            if op == "auth":
                result: dict[str, Any] = {"user": USER, "heartbeat": 20.0}
            elif op == "join":
                rooms[room].add(ws)
                joined.add(room)
                result = {"room": {"id": room, "name": room, "kind": "drop_in"}, "seq": seqs[room]}
                result |= {"presence": [USER], "events": [], "recovered": True}
            elif op == "send" and room in joined:
                seqs[room] += 1
                ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
                result = {"seq": seqs[room], "ts": ts}
                event = {"ev": "message", "room": room, "from": USER, "text": cmd.get("text"), **result}
                event["client_id"] = cmd.get("client_id")
                by_encoding: defaultdict[str, list[ServerConnection]] = defaultdict(list)
                for member in rooms[room]:
                    by_encoding[member.subprotocol or JSON].append(member)
                for members in by_encoding.values():
                    broadcast(members, encode(members[0], event))
            else:
                result = {}
            await ws.send(encode(ws, {"id": cid, "result": result}))
    except ConnectionClosed:
        pass
    finally:
        for room in joined:
            rooms[room].discard(ws)


async def main(port: int) -> None:
    async with serve(
        handler, "127.0.0.1", port, subprotocols=[MSGPACK, JSON], ping_interval=20, compression=None, backlog=2048
    ) as srv:
        print(f"reference server on ws://127.0.0.1:{port}/ws", file=sys.stderr, flush=True)
        await srv.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8765))
