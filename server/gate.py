"""The gate: every TCP connection of a worker is counted and timed from the moment it is
accepted, before a byte of it is parsed for the application.

- At most `limit` connections per worker and `per_address` per client address (an IPv6
  client counts by its /64, the block one subscriber holds); one more is answered
  `503 Service Unavailable` at once and closed. Trusted proxies carry many clients and are
  not counted per address (cap clients at the proxy; docs/security.md).
- A request must arrive whole (head and body) within `request_timeout` seconds of the
  connection, or of the request's first byte: a client that sends nothing, or half a
  header, or half a websocket upgrade, is answered `408 Request Timeout` and closed (only
  closed once a head arrived whole: uvicorn may be answering it). Between requests,
  uvicorn's keep-alive timeout applies.
- A request's line and headers are at most MAX_HEAD bytes (uvicorn and httptools keep
  every header they are sent, with no limit of their own): past it, `431` and closed.
- A response the client does not read is given `request_timeout` seconds to drain before
  the connection is reset (uvicorn would hold the connection and its request for ever).

uvicorn runs the HTTP side: `Gate.http` is the factory it is given as `http=`, which puts a
`Guard` in front of uvicorn's own HTTP protocol. A connection upgraded to a websocket
leaves the guard; its place is handed to the socket (`Gate.take`), which gives it back
when it is lost.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import resource
import socket
from collections.abc import Sequence
from typing import Any, Final, cast

import httptools
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from server.transport import SEND_BUFFER

log = logging.getLogger("hearth.gate")

FULL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 5\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 22\r\n\r\nToo many connections.\n"
)
TOO_BIG: Final = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\nRequest head too big\n"
)
MAX_HEAD: Final = 64 * 1024  # bytes received while in a request's line and headers
TOO_SLOW: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\nRequest took too long\n"
)
FD_RESERVE: Final = 64  # file descriptors kept for the database, Redis, logs and the listener


def address_key(host: str) -> str:
    """Whom a client is counted as: its IPv4 address, or the /64 of its IPv6 address (the
    block one subscriber is usually given); an IPv4 address mapped into IPv6 as itself."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


class Proxies:
    """The trusted proxies (HEARTH_TRUSTED_PROXIES): addresses, networks, or `*` for any."""

    def __init__(self, entries: Sequence[str]) -> None:
        self.any = "*" in entries
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]

    def holds(self, peer: Any) -> bool:
        if self.any:
            return True
        if not self.networks or not isinstance(peer, tuple) or not peer or not isinstance(peer[0], str):
            return False
        try:
            address = ipaddress.ip_address(peer[0].split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class Ticket:
    """One connection's place at the gate; `release()` gives it back (once)."""

    __slots__ = ("gate", "address", "counted", "timer", "released")

    def __init__(self, gate: Gate, address: str, counted: bool) -> None:
        self.gate = gate
        self.address = address
        self.counted = counted  # against its address (not for trusted proxies)
        self.timer: asyncio.TimerHandle | None = None
        self.released = False

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.stop_timer()
            self.gate._release(self)


class Gate:
    """This worker's connections, counted and timed (see the module's docstring)."""

    def __init__(self, *, limit: int, per_address: int, request_timeout: float, trusted: Sequence[str] = ()) -> None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft - FD_RESERVE < limit:
            log.warning("connection limit lowered from %d to %d by the open-files limit", limit, soft - FD_RESERVE)
            limit = max(1, soft - FD_RESERVE)
        self.limit = limit
        self.per_address = per_address
        self.request_timeout = request_timeout
        self.trusted = Proxies(trusted)
        self.count = 0
        self.refused = 0  # connections answered 503 since the start
        self.timed_out = 0  # connections closed for a request or response that did not move
        self._by_address: dict[str, int] = {}
        self._tickets: dict[asyncio.BaseTransport, Ticket] = {}  # connections in the guard's hands

    def admit(self, peer: Any) -> Ticket | None:
        """A place for a new connection from `peer`, or None when the worker or the address is full."""
        address = address_key(peer[0] if isinstance(peer, tuple) and peer and isinstance(peer[0], str) else "")
        counted = not self.trusted.holds(peer)
        if self.count >= self.limit or (counted and self._by_address.get(address, 0) >= self.per_address):
            self.refused += 1
            return None
        self.count += 1
        if counted:
            self._by_address[address] = self._by_address.get(address, 0) + 1
        return Ticket(self, address, counted)

    def _release(self, ticket: Ticket) -> None:
        self.count -= 1
        if ticket.counted:
            left = self._by_address[ticket.address] - 1
            if left:
                self._by_address[ticket.address] = left
            else:
                del self._by_address[ticket.address]

    def take(self, transport: asyncio.BaseTransport) -> Ticket | None:
        """The ticket of a connection being upgraded to a websocket, for the socket to keep
        (and to release when it is lost); its request deadline stops here."""
        ticket = self._tickets.pop(transport, None)
        if ticket is not None:
            ticket.stop_timer()
        return ticket

    def http(self, **uvicorn_state: Any) -> Guard:
        """The factory uvicorn calls for each new connection (`http=`)."""
        return Guard(self, uvicorn_state)


class Guard(asyncio.Protocol):
    """In front of uvicorn's HTTP protocol for one connection: admits it at the gate, times
    each request and bounds its head with a parser of its own (httptools, as uvicorn's), and
    lets a connection go whose responses are not read."""

    __slots__ = (
        "gate", "state", "inner", "transport", "ticket", "parser", "heard", "in_head", "head", "tail", "fired",
        "stall",
    )  # fmt: skip

    def __init__(self, gate: Gate, uvicorn_state: dict[str, Any]) -> None:
        self.gate = gate
        self.state = uvicorn_state
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.ticket: Ticket | None = None
        self.parser: Any = None
        self.heard = False  # a request's head arrived whole: uvicorn may be answering it
        self.in_head = True  # within a request's line and headers (or waiting for the first)
        self.head = 0  # bytes of the current head's line and headers, as httptools gave them
        self.tail = 0  # at most this many bytes more of it, not given whole yet (a header in parts)
        self.fired = False  # httptools gave a piece of the head during the current read
        self.stall: asyncio.TimerHandle | None = None  # a response not read: abort when it fires

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's are not asyncio.Transport subclasses)
        self.transport = transport
        self.ticket = self.gate.admit(transport.get_extra_info("peername"))
        if self.ticket is None:
            transport.write(FULL)
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)  # as a websocket's
        self.gate._tickets[transport] = self.ticket
        self.parser = httptools.HttpRequestParser(self)
        self._arm()
        self.inner = AutoHTTPProtocol(**self.state)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None or self.transport is None:
            return
        if self.parser is not None:
            self.fired = False
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self.parser = None  # the websocket takes it from here (Gate.take)
            except httptools.HttpParserError:
                self.parser = None  # uvicorn answers 400 and closes
            if self.in_head:  # what is not given whole yet is at most what came since the last piece
                self.tail = len(data) if self.fired else self.tail + len(data)
                if self.head + self.tail > MAX_HEAD:
                    self.parser = None
                    if not self.heard:
                        self.transport.write(TOO_BIG)
                    self.transport.close()
                    return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        if self.transport is not None:
            self.gate._tickets.pop(self.transport, None)
        if self.ticket is not None:
            self.ticket.release()
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """A response is backed up: the client has `request_timeout` seconds to read some of it
        (uvicorn waits for ever, holding the connection and its request's task)."""
        if self.stall is None:
            self.stall = asyncio.get_running_loop().call_later(self.gate.request_timeout, self._stalled)
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        if self.inner is not None:
            self.inner.resume_writing()

    def _stalled(self) -> None:
        self.stall = None
        if self.transport is not None and not self.transport.is_closing():
            self.gate.timed_out += 1
            self.transport.abort()

    # The request deadline and the size of its head (httptools' callbacks)

    def _arm(self) -> None:
        ticket = self.ticket
        if ticket is not None and ticket.timer is None:
            ticket.timer = asyncio.get_running_loop().call_later(self.gate.request_timeout, self._expired)

    def on_message_begin(self) -> None:
        self.in_head, self.head, self.tail = True, 0, 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self.head += len(url) + 16  # with the method and the protocol
        self.fired = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head += len(name) + len(value) + 4  # with ": " and CRLF
        self.fired = True

    def on_headers_complete(self) -> None:
        self.heard, self.in_head = True, False

    def on_message_complete(self) -> None:
        if self.ticket is not None:
            self.ticket.stop_timer()

    def _expired(self) -> None:
        """A request still incomplete: 408 if no head arrived whole on this connection (else
        uvicorn may be writing a response already), and closed."""
        transport = self.transport
        if self.ticket is not None:
            self.ticket.timer = None
        if transport is None or transport.is_closing():
            return
        self.gate.timed_out += 1
        if not self.heard:
            transport.write(TOO_SLOW)
            transport.close()
        else:
            transport.abort()
