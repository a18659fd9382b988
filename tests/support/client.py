"""The websocket client as an app would write it: `open_client` connects (and signs in);
`Client` sends commands by id and keeps every other frame in its `Inbox`.

A test waits for what a user would observe, never for time to pass:

- `await client.event("message", room=room)` takes the next such event;
- `client.seen("presence", where=...)` lists what has come so far, taken or not;
- `await client.until("presence", where=..., within=...)` waits until one has come;
- `await client.no_event("reminder", within=2 * UNIT)` fails if one comes in that time.

Set `client.on_wire = []` to keep every frame from then on as it came on the wire (bytes), for a
test that reads what was sent rather than what it decodes to.

Every deadline is a multiple of `UNIT` (see `tests.support.deadlines`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.deadlines import TIMEOUT
from tests.support.inbox import Frame, Inbox, Kind

if TYPE_CHECKING:
    from tests.support.api import Account
    from tests.support.processes import ServerProcess
    from tests.support.servers import Running

JSON, MSGPACK = "hearth.v1.json", "hearth.v1.msgpack"
ENCODINGS = [JSON, MSGPACK]

Where = Callable[[Frame], bool] | None


class Client:
    """A websocket client: commands by id; events, and replies nobody waits for (`"id": null`),
    kept in the order they came."""

    def __init__(self, ws: ClientConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.ids = itertools.count(1)
        self.replies: dict[int, asyncio.Future[Frame]] = {}
        self.inbox = Inbox()
        self.closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self.on_wire: list[bytes] | None = None  # a list: every frame from now on, as it came on the wire
        self.reader = asyncio.create_task(self._read())

    def encode(self, message: Frame) -> str | bytes:
        if self.encoding == MSGPACK:
            data: bytes = msgpack.packb(message, use_bin_type=True)
            return data
        return orjson.dumps(message).decode()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                if self.on_wire is not None:
                    self.on_wire.append(raw if isinstance(raw, bytes) else raw.encode())
                message = msgpack.unpackb(raw) if isinstance(raw, bytes) else orjson.loads(raw)
                if self.encoding == MSGPACK:
                    assert isinstance(raw, bytes), "msgpack connections get binary frames"
                else:
                    assert isinstance(raw, str), "JSON connections get text frames"
                if "ev" not in message and message.get("id") in self.replies:
                    self.replies.pop(message["id"]).set_result(message)
                else:
                    self.inbox.put(message)  # an event, or a reply nobody waits for (id null)
        except ConnectionClosed:
            pass
        finally:
            code, reason = self.ws.close_code, self.ws.close_reason or ""
            self.closed.set_result((code, reason))
            self.inbox.close(f"closed ({code} {reason!r})")

    # Commands

    async def raw(self, frame: str | bytes) -> None:
        await self.ws.send(frame)

    def reply_to(self, cid: int) -> asyncio.Future[Frame]:
        """The reply to a command of id `cid` that the test sends itself, as a raw frame."""
        future = self.replies[cid] = asyncio.get_running_loop().create_future()
        return future

    async def request(self, op: str, **args: Any) -> Frame:
        """Send a command; return the whole reply (`result` or `error`). If the connection
        closes first, raise ConnectionClosed then rather than wait out the deadline."""
        cid = next(self.ids)
        future = self.reply_to(cid)
        await self.ws.send(self.encode({"id": cid, "op": op, **args}))
        either: list[asyncio.Future[Any]] = [future, self.closed]
        await asyncio.wait(either, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if future.done():
            return future.result()
        if self.closed.done():
            raise self.ws.close_exc
        raise AssertionError(f"no reply to {op!r} within {TIMEOUT:.1f} s")

    async def call(self, op: str, **args: Any) -> Frame:
        """Send a command that must succeed; return its result."""
        reply = await self.request(op, **args)
        assert "result" in reply, reply
        result: Frame = reply["result"]
        return result

    async def error(self, op: str, **args: Any) -> Frame:
        """Send a command that must fail; return its error."""
        reply = await self.request(op, **args)
        assert "error" in reply, reply
        error: Frame = reply["error"]
        return error

    # Events, and replies nobody waits for: of kind `ev`, in `room`, for which `where` holds

    async def event(self, ev: str | None = None, *, room: str | None = None, where: Where = None) -> Frame:
        """Take the next frame that matches, skipping (and taking) those before it."""
        return await self.inbox.take(Kind(ev, room, where), within=TIMEOUT)

    async def messages(self, room: str, count: int) -> list[Frame]:
        """Take the next `count` durable events of `room` (those with a seq), in the order they came."""
        durable = Kind(room=room, where=lambda event: "seq" in event)
        return [await self.inbox.take(durable, within=TIMEOUT) for _ in range(count)]

    def seen(self, ev: str | None = None, *, room: str | None = None, where: Where = None) -> list[Frame]:
        """Every frame so far that matches, taken by `event()` or not."""
        return self.inbox.seen(Kind(ev, room, where))

    async def until(
        self, ev: str | None = None, *, room: str | None = None, where: Where = None, within: float = TIMEOUT
    ) -> Frame:
        """Wait until a frame that matches has come (perhaps already); return the first. Takes nothing."""
        return await self.inbox.until(Kind(ev, room, where), within=within)

    async def no_event(
        self, ev: str | None = None, *, room: str | None = None, where: Where = None, within: float
    ) -> None:
        """Fail at once if a frame that matches is waiting, not yet taken, or comes within
        `within` seconds; otherwise return after them (or at the close: nothing more can come)."""
        await self.inbox.none(Kind(ev, room, where), within=within)

    # Closing

    async def closing(self, *, within: float = TIMEOUT) -> tuple[int | None, str]:
        """The close code and reason, once the connection is closed."""
        return await asyncio.wait_for(asyncio.shield(self.closed), within)

    async def close_code(self) -> int | None:
        code, _ = await self.closing()
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
