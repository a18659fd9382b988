"""Each websocket: websockets' sans-I/O `ServerProtocol`, driven by an asyncio protocol of
Hearth's own.

websockets documents `ServerProtocol` for this use: bytes from the network go in with
`receive_data`, what they mean comes out of `events_received`, and whatever the protocol
answers by itself (the handshake response, pongs, the closing handshake) comes out of
`data_to_send` for the caller to write. What this module adds is what a server of
thousands of mostly idle phones needs:

- Frames written once for everyone. Fan-out frames an event once per encoding
  (`Codec.frame`: whole, unmasked frames, as a server's always are) and hands the same
  bytes to every member's `write_frame`, which writes them while the socket is open: no
  task, no copy, no await per member.
- Reading only while it costs nothing. The socket stops reading while a message waits in
  its inbox for the connection's reader, and while its own writes are backed up (a client
  that does not read cannot make it answer pings into memory without end): TCP holds the
  client back instead. Before `auth`, a message may be 4 KiB at most, refused as its
  header arrives (`allow_messages` raises it once the socket is signed in).
- A keepalive ping, and a close that always ends. Once a close is under way (either side,
  or a keepalive that got no pong) the socket keeps reading, so the client's close frame
  and pongs are taken in, and at most `close_timeout` seconds later it is aborted if it is
  still there: a phone that stopped reading is let go in bounded time, and a phone that
  comes back after that sees a reset (1006), never a socket that neither reads nor closes.
- The socket's kernel send buffer is capped (`SEND_BUFFER`), so a phone that stops reading
  holds at most that much of the kernel's memory, and a close frame queued behind it is
  read soon after the phone reads again.

uvicorn parses the HTTP request and hands the upgraded connection over (`WebSockets`, the
factory given to uvicorn as `ws=`); `tests/contract/test_libraries.py` holds that hand-over,
and the two places where this module reaches past websockets' documented API (`release`,
`Socket.allow_messages`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple, Protocol, cast

from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

log = logging.getLogger("hearth.ws")

HANDSHAKE_LOG: Final = "hearth.handshake"  # websockets' own lines (one per connection): warnings only
# At DEBUG, websockets logs every frame with the start of its payload (message text): never.
logging.getLogger(HANDSHAKE_LOG).setLevel(logging.WARNING)
SEND_BUFFER: Final = 256 * 1024  # bytes of kernel send buffer per socket (Linux doubles it)
LINGER_RESET: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets the connection


class Incoming(NamedTuple):
    """A whole message from the client: a text frame's UTF-8 bytes, or a binary frame's."""

    text: bool
    data: bytes


class Closed(NamedTuple):
    """The socket is closing or gone: its reader stops."""

    code: int


Message = Incoming | Closed


class Slot(Protocol):
    """The socket's place among the worker's connections (server.gate), given back when it is lost."""

    def release(self) -> None: ...


class Endpoint(Protocol):
    """What happens at the handshake and after it (server.ws). `select` is a plain function
    (websockets binds it to its protocol, as a method of its own)."""

    @property
    def select(self) -> Callable[[ServerProtocol, Sequence[Subprotocol]], Subprotocol | None]: ...

    def check(self, request: Request, socket: Socket) -> tuple[int, str] | None:
        """None to accept the handshake, or the HTTP status and text to refuse it with."""
        ...

    def opened(self, socket: Socket, request: Request) -> None:
        """The handshake is done: start serving the socket."""
        ...

    def slot(self, transport: asyncio.Transport) -> Slot | None:
        """The place the HTTP side counted this connection in, now the socket's to give back."""
        ...


class Socket(asyncio.Protocol):
    """One websocket connection. `receive()`, `write_frame()`, `close_with()` and the
    `paused` flag are what a `server.connection.Connection` uses of it."""

    __slots__ = (
        "endpoint", "ws", "transport", "slot", "on_writable", "_loop", "_open", "_paused", "_read_paused",
        "_queued", "_inbox", "_waiter", "_parts", "_parts_text", "_ping", "_ping_timer", "_pong_timer",
        "_abort_timer", "_ping_interval", "_ping_timeout", "_close_timeout", "__weakref__",
    )  # fmt: skip

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        max_size: int,
        ping_interval: float,
        ping_timeout: float,
        close_timeout: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.endpoint = endpoint
        self.ws = ServerProtocol(
            select_subprotocol=endpoint.select, max_size=max_size, logger=logging.getLogger(HANDSHAKE_LOG)
        )
        self.transport: asyncio.Transport | None = None
        self.slot: Slot | None = None
        self.on_writable: Callable[[], None] | None = None  # called when a paused transport drains
        self._loop = loop
        self._open = False  # the handshake is done and no close has been sent or received
        self._paused = False  # the transport's buffer is over its high-water mark
        self._read_paused = False
        self._queued = 0  # messages in the inbox that the reader has not taken
        self._inbox: list[Message] = []
        self._waiter: asyncio.Future[None] | None = None
        self._parts: list[bytes] | None = None  # the frames of a fragmented message so far
        self._parts_text = False
        self._ping: bytes | None = None  # the payload of the ping awaiting its pong
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout

    # asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's are not asyncio.Transport subclasses)
        self.transport = transport
        self.slot = self.endpoint.slot(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._handshake(event)
        self._check_state()
        self._write_pending()

    def eof_received(self) -> bool:
        """The client ended its stream: the connection is over, whatever websockets would make
        of it (it would record an EOFError whose traceback holds it in a reference cycle)."""
        return False  # asyncio closes the transport; connection_lost tells the reader

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        for timer in (self._ping_timer, self._pong_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self._ping_timer = self._pong_timer = self._abort_timer = None
        self._put(Closed(1006))
        if self._paused:  # asyncio never resumes writing on a transport that was lost paused
            self._paused = False
        self.on_writable = None
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        release(self.ws)

    def pause_writing(self) -> None:
        self._paused = True
        self._sync_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self._sync_reading()
        if self.on_writable is not None:
            self.on_writable()

    def _sync_reading(self) -> None:
        """Read from the client unless a message of theirs waits to be taken, or what is
        written to them is backed up (pongs and close replies are written whatever the
        backlog, so a client that does not read must not be read from either)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        stop = self._paused or self._queued > 0
        if stop != self._read_paused:
            self._read_paused = stop
            if stop:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # The websocket's side

    def _handshake(self, request: Request) -> None:
        ws = self.ws
        try:
            refused = self.endpoint.check(request, self)
        except Exception:
            log.exception("websocket handshake check failed")
            refused = (500, "Internal Server Error\n")
        response: Response = ws.reject(*refused) if refused is not None else ws.accept(request)
        ws.send_response(response)
        if response.status_code != 101:
            self._write_pending()
            return
        self._open = True
        if self._ping_interval > 0:
            self._ping_timer = self._loop.call_later(self._ping_interval, self._send_ping)
        self._write_pending()  # the 101 goes out before anything the endpoint writes
        try:
            self.endpoint.opened(self, request)
        except Exception:
            log.exception("websocket start failed")
            self.close_with(1011, "internal error")

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(opcode is Opcode.TEXT, bytes(frame.data))
            else:
                self._parts, self._parts_text = [bytes(frame.data)], opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            if self._parts is not None:  # (websockets refuses a continuation without a start)
                self._parts.append(bytes(frame.data))
                if frame.fin:
                    data, self._parts = b"".join(self._parts), None
                    self._message(self._parts_text, data)
        elif opcode is Opcode.PONG:
            if self._ping is not None and bytes(frame.data) == self._ping:
                self._ping = None
                if self._pong_timer is not None:
                    self._pong_timer.cancel()
                    self._pong_timer = None
                if self._open and self._ping_interval > 0:
                    self._ping_timer = self._loop.call_later(self._ping_interval, self._send_ping)
        elif opcode is Opcode.CLOSE:
            self._open = False  # websockets answers it (data_to_send) and ends the stream
            close = self.ws.close_rcvd
            self._put(Closed(close.code if close is not None else 1005))
        # Pings are answered by websockets itself, in data_to_send.

    def _check_state(self) -> None:
        """websockets failed the connection (a protocol error, a message over `max_size`, the
        stream ended): the reader stops."""
        if self._open and self.ws.state is not State.OPEN:
            self._open = False
            self._put(Closed(self.ws.close_code or 1006))

    def _message(self, text: bool, data: bytes) -> None:
        if not self._open:
            return  # past a close: read and dropped, until the client's close frame arrives
        self._put(Incoming(text, data))
        self._queued += 1
        self._sync_reading()

    def _write_pending(self) -> None:
        """Write what websockets has for the network; its empty bytes mean: end the stream."""
        transport = self.transport
        if transport is None:
            return
        for data in self.ws.data_to_send():
            if data:
                transport.write(data)
            elif not transport.is_closing():
                transport.close()
        if self.ws.close_expected() or transport.is_closing():
            self._close_soon()

    def _close_soon(self) -> None:
        """The connection is ending: it is read as before (for the client's close frame), and
        aborted if it is still there `close_timeout` seconds from now. `transport.close()`
        alone would wait for ever for a client that stopped reading to take what is buffered."""
        if self._abort_timer is None and self.transport is not None:
            self._abort_timer = self._loop.call_later(self._close_timeout, self._abort)

    def _abort(self) -> None:
        """Reset the connection: with SO_LINGER at zero the kernel drops what it still holds
        for the client and sends RST at once. A plain close would leave the socket to the
        kernel, still holding its send buffer, for as long as TCP retries a zero window."""
        self._abort_timer = None
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        transport.abort()

    # Keepalive

    def _send_ping(self) -> None:
        self._ping_timer = None
        if not self._open:
            return
        self._ping = os.urandom(4)
        self.ws.send_ping(self._ping)
        self._write_pending()
        self._pong_timer = self._loop.call_later(self._ping_timeout, self._no_pong)

    def _no_pong(self) -> None:
        if self._queued:  # the pong may be waiting unread behind a command still being run
            self._pong_timer = self._loop.call_later(self._ping_timeout, self._no_pong)
            return
        self._pong_timer = None
        self._ping = None
        log.info("no pong to the keepalive ping: closing")
        self.close_with(1011, "keepalive ping timeout")

    # What a connection uses

    @property
    def paused(self) -> bool:
        """The transport's buffer is over its high-water mark: hold frames back."""
        return self._paused

    def write_frame(self, data: bytes) -> None:
        """Write whole frames (from `Codec.frame`); dropped once the socket is closing."""
        if self._open:
            self.transport.write(data)  # type: ignore[union-attr]

    def close_with(self, code: int, reason: str) -> None:
        """Send the close frame now. The reader gets `Closed`; the socket ends when the client
        answers, or is aborted `close_timeout` seconds from now."""
        if not self._open:
            return
        self._open = False
        self._put(Closed(code))
        self.ws.send_close(code, reason)
        self._write_pending()
        self._close_soon()

    def receive(self) -> Any:
        """The next `Message` (a coroutine to await). A message taken lets the socket read again."""
        return self._get()

    async def _get(self) -> Message:
        while not self._inbox:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._inbox.pop(0)
        if isinstance(message, Incoming):
            self._queued -= 1
            self._sync_reading()
        return message

    def allow_messages(self, size: int) -> None:
        """Take messages of up to `size` bytes from now on (the socket is signed in). websockets
        reads its `max_message_size` for each frame it parses; it has no documented setter."""
        self.ws.max_message_size = size

    def _put(self, message: Message) -> None:
        if isinstance(message, Closed) and any(isinstance(m, Closed) for m in self._inbox):
            return  # the reader stops at the first
        self._inbox.append(message)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def release(ws: ServerProtocol) -> None:
    """End the reference cycles websockets' protocol is left in once its connection is lost.
    Its parser is a generator that holds the protocol, and a parser that failed keeps its
    exception, whose traceback holds the parser's frame, which holds the protocol. Ended
    here, a closed connection is freed by reference counting alone rather than left for the
    cycle collector, whose full collections stop the worker for as long as it takes to scan
    every connection it holds. No data is fed to the protocol after this.
    `tests/contract/test_libraries.py` holds this to the version of websockets in use."""
    parser = getattr(ws, "parser", None)
    if parser is not None:
        parser.close()
    failure = getattr(ws, "parser_exc", None)
    if failure is not None:
        failure.__traceback__ = None


class WebSockets:
    """The factory uvicorn calls (`ws=`) with each connection it upgrades. uvicorn parsed the
    request already and passes it on as bytes, which the socket parses once more."""

    def __init__(self, endpoint: Endpoint, *, max_size: int, ping_interval: float, close_timeout: float) -> None:
        """`max_size`: the most a message may be until the socket is signed in."""
        self.endpoint = endpoint
        self.max_size = max_size
        self.ping_interval = ping_interval
        self.close_timeout = close_timeout

    def __call__(self, *, _loop: asyncio.AbstractEventLoop | None = None, **uvicorn_state: Any) -> Socket:
        return Socket(
            self.endpoint,
            max_size=self.max_size,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            close_timeout=self.close_timeout,
            loop=_loop or asyncio.get_running_loop(),
        )
