"""Connection: one client socket, its codec, its user and its bounded backlog."""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from rooms.limits import TokenBucket
from rooms.live import visible
from rooms.model import ConnId, Member, RoomId, User
from rooms.permissions import NOBODY, Op, Standing, allowed
from server.closecodes import CLOSE_TOO_SLOW
from server.codec import Codec
from server.metrics import Metrics
from server.settings import Limits
from server.transport import Closed, Incoming, Message

log = logging.getLogger("hearth.ws")


class Wire(Protocol):
    """What a connection needs of its websocket (server.transport.Socket)."""

    on_writable: Callable[[], None] | None

    @property
    def paused(self) -> bool: ...

    def write_frame(self, data: bytes) -> None: ...

    def close_with(self, code: int, reason: str) -> None: ...

    def allow_messages(self, size: int) -> None: ...

    def receive(self) -> Awaitable[Message]: ...


class Budget:
    """Bytes held back for one user's connections on this worker, all together: a user with
    20 sockets that stop reading holds `user_outbox_bytes`, not 20 outboxes."""

    __slots__ = ("held", "users")

    def __init__(self) -> None:
        self.held = 0
        self.users = 0  # connections sharing it


class Disconnected(Exception):
    """The client went away (or the server is closing the socket)."""


NO_ROOMS: frozenset[RoomId] = frozenset()


class Connection:
    """A client's socket as the hub sees it.

    `push()` never waits and never needs a task: each frame goes straight to the socket's
    transport. While the transport is paused (its buffer is over the high-water mark),
    frames wait in a backlog that the transport's resume drains. The backlog is bounded in
    bytes, per connection (`limits.outbox_bytes`) and for all of a user's connections on
    this worker together (`limits.user_outbox_bytes`); past either, the connection closes
    with 4408, so one slow phone never holds a room back, and a client that stops reading
    cannot make the server hold more than that for it. It catches up later by resuming
    with `since`.
    """

    __slots__ = (
        "metrics", "id", "wire", "codec", "limits", "user", "token_id", "rooms", "members", "standings", "facilitating",
        "on_duty",
        "bucket", "strikes", "budget", "_backlog", "_held", "_corked", "_close", "_gone",
    )  # fmt: skip

    def __init__(self, wire: Wire, codec: Codec, limits: Limits, now: float, metrics: Metrics) -> None:
        self.metrics = metrics
        self.id = ConnId(secrets.token_hex(8))
        self.wire = wire
        wire.on_writable = self._flush
        self.codec = codec
        self.limits = limits
        self.user: User | None = None
        self.token_id = ""
        self.rooms: set[RoomId] = set()
        self.members: dict[RoomId, Member] = {}  # who the user is in each room joined: its community's card
        self.standings: dict[RoomId, Standing] = {}  # what they are there, for the permission matrix
        self.facilitating = NO_ROOMS  # rooms where this user runs sessions: sees private events
        self.on_duty = NO_ROOMS  # rooms where this staff member is shown as on duty
        self.bucket = TokenBucket(limits.rate, limits.burst, now)
        self.strikes = 0
        self.budget: Budget | None = None  # the user's, once signed in
        self._backlog: deque[bytes] | None = None  # made when the transport first pauses
        self._held = 0  # bytes in the backlog
        self._corked: list[bytes] | None = None  # frames collected for one write (`cork`)
        self._close: tuple[int, str] | None = None
        self._gone = False

    def mark(self, room: RoomId, *, facilitating: bool | None = None, on_duty: bool | None = None) -> None:
        """Start or stop facilitating, or being shown on duty, in `room`. Most connections do
        neither: they share one empty set for both instead of holding two of their own."""
        if facilitating is not None and (room in self.facilitating) != facilitating:
            self.facilitating = self.facilitating | {room} if facilitating else self.facilitating - {room}
        if on_duty is not None and (room in self.on_duty) != on_duty:
            self.on_duty = self.on_duty | {room} if on_duty else self.on_duty - {room}

    def stand(self, room: RoomId, standing: Standing | None) -> None:
        """Take `standing` in `room` (None: none, having left it): with it, whether the
        connection facilitates there (sees the room's private events, never waits)."""
        if standing is None:
            self.standings.pop(room, None)
            self.mark(room, facilitating=False)
        else:
            self.standings[room] = standing
            self.mark(room, facilitating=allowed(Op.ROOM_FACILITATE, standing))

    def standing(self, room: RoomId) -> Standing:
        """The user's standing in a room they joined (none at all elsewhere)."""
        return self.standings.get(room, NOBODY)

    @property
    def user_id(self) -> str:
        """The account: for this worker's own bookkeeping and logs, never for a peer."""
        return self.user.id if self.user else ""

    def who(self, room: RoomId) -> str:
        """The member id this connection's user has in `room` (joined, or joining)."""
        member = self.members.get(room)
        return member.id if member is not None else ""

    def sees(self, room: RoomId, event: Mapping[str, Any]) -> bool:
        """Whether a durable event of `room` may be shown on this connection."""
        return visible(event, self.who(room), facilitator=room in self.facilitating)

    @property
    def closing(self) -> bool:
        return self._close is not None

    # Writing

    def push(self, frame: bytes, *, momentary: bool = False) -> bool:
        """Write a framed event (`codec.frame`), or hold it back while the socket is behind;
        False if it was dropped. Closes with 4408 rather than hold too many. A `momentary`
        frame (typing) is dropped instead of held back: by the time a phone that is behind
        gets to it, it would only delay what matters."""
        if self._close is not None or self._gone:  # (late acks and notices of a socket that is gone)
            return False
        if self._backlog or self.wire.paused:
            if momentary:
                self.metrics.shed.inc()
                return False
            if self._backlog is None:
                self._backlog = deque()
            size, budget = len(frame), self.budget
            if self._held + size > self.limits.outbox_bytes or (
                budget is not None and budget.held + size > self.limits.user_outbox_bytes
            ):
                log.info("outbox full, closing conn=%s user=%s", self.id, self.user_id)
                self.metrics.overflows.inc()
                self._drop_backlog()
                self.close_soon(CLOSE_TOO_SLOW, "too slow: resume with since")
                return False
            self._backlog.append(frame)
            self._held += size
            if budget is not None:
                budget.held += size
            return True
        if self._corked is not None:
            self._corked.append(frame)
            return True
        self.wire.write_frame(frame)
        return True

    def cork(self) -> None:
        """Collect pushed frames until `uncork()`: several events, one write to the socket."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> None:
        frames, self._corked = self._corked, None
        if frames:
            self.wire.write_frame(frames[0] if len(frames) == 1 else b"".join(frames))

    def send(self, message: Mapping[str, Any]) -> None:
        self.push(self.codec.frame(message))

    def close_soon(self, code: int, reason: str = "") -> None:
        """Close after the frames already held back are written. A client that never reads
        them does not answer pings either: the keepalive then lets the socket go."""
        if self._close is None:
            self.metrics.closes.labels(str(code)).inc()
            self.uncork()  # what was pushed before the close goes out before it
            self._close = (code, reason)
            self._flush()

    def _flush(self) -> None:
        """Write held-back frames while the transport takes them, then a close asked for."""
        backlog, wire = self._backlog, self.wire
        while backlog and not wire.paused:
            frame = backlog.popleft()
            self._let_go(len(frame))
            wire.write_frame(frame)
        if not backlog and self._close is not None:
            wire.close_with(*self._close)

    def _let_go(self, size: int) -> None:
        self._held -= size
        if self.budget is not None:
            self.budget.held -= size

    def _drop_backlog(self) -> None:
        """Forget what is held back (the connection is closing, or gone)."""
        if self._backlog:
            self._let_go(self._held)
            self._backlog.clear()

    def forget(self) -> None:
        """The socket is gone: give its held bytes back to the user's budget."""
        self._drop_backlog()

    # Reading

    def receive(self) -> Awaitable[Message]:
        """The next message from the socket, for `payload()`; raises Disconnected once the
        socket has closed. The wire's own coroutine is handed back: an idle connection waits
        in it with no coroutine of this one's around it."""
        if self._gone:
            raise Disconnected
        return self.wire.receive()

    def payload(self, message: Message) -> Incoming:
        """A client's message from a `receive()`; raises Disconnected for the close."""
        if isinstance(message, Closed):
            self._gone = True
            raise Disconnected
        return message
