"""The gate: every TCP connection of a worker is counted and timed from the moment it is
accepted, before a byte of it is parsed for the application.

- At most `limit` connections per worker and `per_address` per client address (an IPv6
  client counts by its /64, the block one subscriber holds); one more is answered
  `503 Service Unavailable` at once and closed. Trusted proxies carry many clients and are
  not counted per address (cap clients at the proxy; docs/security.md).
- A request must arrive whole (head and body) within `request_timeout` seconds of the
  connection, or of the request's first byte: a client that sends nothing, or half a
  header, or half a websocket upgrade, is answered `408 Request Timeout` (if nothing was
  answered on the connection yet) and closed. Between requests, uvicorn's keep-alive
  timeout applies.
- A request's line and headers are at most MAX_HEAD bytes (uvicorn and httptools keep
  every header they are sent, with no limit of their own): past it, `431` and closed.

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
from collections.abc import Sequence
from typing import Any, Final, cast

import httptools
from uvicorn.protocols.http.auto import AutoHTTPProtocol

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


def address_key(peer: Any) -> str:
    """Whom a connection is counted against: its IPv4 address, or its IPv6 /64."""
    host = peer[0] if isinstance(peer, tuple) and peer else ""
    if not isinstance(host, str) or ":" not in host:
        return host if isinstance(host, str) else ""
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False).network_address) + "/64"


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
        self.timed_out = 0  # connections answered 408 since the start
        self._by_address: dict[str, int] = {}
        self._upgrading: dict[asyncio.BaseTransport, Ticket] = {}

    def admit(self, peer: Any) -> Ticket | None:
        """A place for a new connection from `peer`, or None when the worker or the address is full."""
        address = address_key(peer)
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
        ticket = self._upgrading.pop(transport, None)
        if ticket is not None:
            ticket.stop_timer()
        return ticket

    def http(self, **uvicorn_state: Any) -> Guard:
        """The factory uvicorn calls for each new connection (`http=`)."""
        return Guard(self, uvicorn_state)


class Guard(asyncio.Protocol):
    """In front of uvicorn's HTTP protocol for one connection: admits it at the gate, and
    times each request with a parser of its own (httptools, as uvicorn's)."""

    __slots__ = ("gate", "state", "inner", "transport", "ticket", "parser", "answered", "head")

    def __init__(self, gate: Gate, uvicorn_state: dict[str, Any]) -> None:
        self.gate = gate
        self.state = uvicorn_state
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.ticket: Ticket | None = None
        self.parser: Any = None
        self.answered = False  # a request completed: uvicorn may be writing its response
        self.head = 0  # bytes received while in the current request's head; -1 once it is whole

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # (uvloop's are not asyncio.Transport subclasses)
        self.transport = transport
        self.ticket = self.gate.admit(transport.get_extra_info("peername"))
        if self.ticket is None:
            transport.write(FULL)
            transport.close()
            return
        self.gate._upgrading[transport] = self.ticket
        self.parser = httptools.HttpRequestParser(self)
        self._arm()
        self.inner = AutoHTTPProtocol(**self.state)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.inner is None or self.transport is None:
            return
        if self.parser is not None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self.parser = None  # the websocket takes it from here (Gate.take)
            except httptools.HttpParserError:
                self.parser = None  # uvicorn answers 400 and closes
        if self.head >= 0:  # still in a request's head after this: it counts against MAX_HEAD
            self.head += len(data)
            if self.head > MAX_HEAD:
                self.parser = None
                if not self.answered:
                    self.transport.write(TOO_BIG)
                self.transport.close()
                return
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.gate._upgrading.pop(self.transport, None)
        if self.ticket is not None:
            self.ticket.release()
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # The request deadline (httptools' callbacks)

    def _arm(self) -> None:
        ticket = self.ticket
        if ticket is not None and ticket.timer is None:
            ticket.timer = asyncio.get_running_loop().call_later(self.gate.request_timeout, self._expired)

    def on_message_begin(self) -> None:
        self.head = 0
        self._arm()

    def on_headers_complete(self) -> None:
        self.head = -1

    def on_message_complete(self) -> None:
        self.answered = True
        if self.ticket is not None:
            self.ticket.stop_timer()

    def _expired(self) -> None:
        transport = self.transport
        if self.ticket is not None:
            self.ticket.timer = None
        if transport is None or transport.is_closing():
            return
        self.gate.timed_out += 1
        if not self.answered:
            transport.write(TOO_SLOW)
        transport.close()
