"""The websocket client as an app would write it: `open_client` connects (and signs in);
`Client` sends commands by id and queues every other frame it receives.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.deadlines import TIMEOUT

if TYPE_CHECKING:
    from tests.support.api import Account
    from tests.support.processes import ServerProcess
    from tests.support.servers import Running

JSON, MSGPACK = "hearth.v1.json", "hearth.v1.msgpack"
ENCODINGS = [JSON, MSGPACK]


class Client:
    """A websocket client as an app would write it: commands by id, events in a queue."""

    def __init__(self, ws: ClientConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.ids = itertools.count(1)
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self.reader = asyncio.create_task(self._read())

    def encode(self, message: dict[str, Any]) -> str | bytes:
        if self.encoding == MSGPACK:
            data: bytes = msgpack.packb(message, use_bin_type=True)
            return data
        return orjson.dumps(message).decode()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = msgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
                if self.encoding == MSGPACK:
                    assert isinstance(raw, bytes), "msgpack connections get binary frames"
                else:
                    assert isinstance(raw, str), "JSON connections get text frames"
                if "ev" in message:
                    self.events.put_nowait(message)
                elif message.get("id") in self.replies:
                    self.replies.pop(message["id"]).set_result(message)
                else:
                    self.events.put_nowait(message)  # a reply nobody waits for (id null)
        except ConnectionClosed:
            pass
        finally:
            self.closed.set_result((self.ws.close_code, self.ws.close_reason or ""))

    async def raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    async def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a command; return the whole reply (`result` or `error`)."""
        cid = next(self.ids)
        future = self.replies[cid] = asyncio.get_running_loop().create_future()
        await self.ws.send(self.encode({"id": cid, "op": op, **args}))
        return await asyncio.wait_for(future, TIMEOUT)

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a command that must succeed; return its result."""
        reply = await self.request(op, **args)
        assert "result" in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    async def error(self, op: str, **args: Any) -> dict[str, Any]:
        """Send a command that must fail; return its error."""
        reply = await self.request(op, **args)
        assert "error" in reply, reply
        error: dict[str, Any] = reply["error"]
        return error

    async def event(self, ev: str | None = None, *, room: str | None = None) -> dict[str, Any]:
        """The next event (of kind `ev`, in `room`), skipping others."""
        while True:
            event = await asyncio.wait_for(self.events.get(), TIMEOUT)
            if (ev is None or event.get("ev") == ev) and (room is None or event.get("room") == room):
                return event

    async def messages(self, room: str, count: int) -> list[dict[str, Any]]:
        """The next `count` durable events of `room`, in the order they arrived."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            event = await self.event(room=room)
            if "seq" in event:
                found.append(event)
        return found

    async def close_code(self) -> int | None:
        code, _ = await asyncio.wait_for(asyncio.shield(self.closed), TIMEOUT)
        return code

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


async def open_client(
    running: Running | ServerProcess, account: Account | None = None, encoding: str = JSON, **connect_args: Any
) -> Client:
    """Connect (and, given an account, authenticate) a client."""
    options: dict[str, Any] = {"compression": None, "open_timeout": TIMEOUT, **connect_args}
    ws = await connect(running.ws_url, subprotocols=[encoding], **options)  # type: ignore[list-item]
    client = Client(ws, encoding)
    if account is not None:
        result = await client.call("auth", token=account.token)
        assert result["user"]["id"] == account.id
    return client
