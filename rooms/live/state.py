"""A live session's state: `LiveRoom.apply` folds the session events of a room, in seq
order, into what every worker holds, so any worker can serve any member and they agree."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rooms.clock import iso_ms, parse_ts

LOBBY, LIVE, ENDED = "lobby", "live", "ended"
ANSWER = ("mood", "word", "passed", "skipped")  # what a check-in entry records


@dataclass
class Checkin:
    order: list[str]
    turn: int = 0
    done: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def current(self) -> str | None:
        return self.order[self.turn] if self.turn < len(self.order) else None


@dataclass
class LiveSession:
    """One occurrence, from the lobby opening to its end."""

    key: str
    title: str
    starts_at: str
    ends_at: str
    agreement: str
    facilitators: list[str]  # the lead first
    capacity: int | None = None
    auto_admit: bool = False
    registered: set[str] = field(default_factory=set)
    state: str = LOBBY
    locked: bool = False
    floor_only: bool = False
    waiting: dict[str, Mapping[str, str]] = field(default_factory=dict)
    admitted: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    muted: set[str] = field(default_factory=set)
    queue: list[str] = field(default_factory=list)
    floor: str | None = None
    floor_until: int | None = None  # epoch ms when a timed share ends
    floor_seq: int = 0  # the seq that gave the current floor: names its timer
    pins: dict[str, str] = field(default_factory=dict)
    checkin: Checkin | None = None

    @property
    def lead(self) -> str:
        return self.facilitators[0]

    def facilitates(self, user: str) -> bool:
        return user in self.facilitators

    def inside(self, user: str) -> bool:
        """Whether `user` takes part (admitted, or facilitating), as opposed to waiting."""
        return user in self.admitted or user in self.facilitators

    def knows(self, user: str) -> bool:
        """Whether `user` is in the session or waiting in its lobby: whom moderation can name."""
        return self.inside(user) or user in self.waiting

    def public(self) -> dict[str, Any]:
        """What every participant sees of the session (the join reply's `session`)."""
        return {
            "key": self.key,
            "title": self.title,
            "state": self.state,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "agreement": self.agreement,
            "facilitators": list(self.facilitators),
            "locked": self.locked,
            "floor_only": self.floor_only,
            "queue": list(self.queue),
            "floor": self.floor,
            "floor_until": None if self.floor_until is None else iso_ms(self.floor_until),
            "muted": sorted(self.muted),
            "pins": dict(self.pins),
            "checkin": None
            if self.checkin is None
            else {"order": list(self.checkin.order), "turn": self.checkin.current},
        }

    def lobby_view(self) -> dict[str, Any]:
        """What a member waiting in the lobby sees: when, what, and the group's agreement."""
        keys = ("key", "title", "state", "starts_at", "ends_at", "agreement")
        return {k: v for k, v in self.public().items() if k in keys}

    def for_facilitators(self) -> dict[str, Any]:
        return {
            **self.public(),
            "waiting": [dict(card) for card in self.waiting.values()],
            "admitted": sorted(self.admitted),
        }


class LiveRoom:
    """The live state of one room, folded from its session events."""

    def __init__(self) -> None:
        self.session: LiveSession | None = None

    @property
    def active(self) -> LiveSession | None:
        """The session in its lobby or live, if any."""
        return self.session if self.session is not None and self.session.state != ENDED else None

    def apply(self, event: Mapping[str, Any]) -> None:
        """Fold one durable session event (as clients see it) into the state."""
        action = event["action"]
        if action == "opened":
            if self.active is not None:
                return  # two openings raced: the first one stands (the store skips it too)
            self.session = LiveSession(
                key=event["key"],
                title=event["title"],
                starts_at=event["starts_at"],
                ends_at=event["ends_at"],
                agreement=event.get("agreement", ""),
                facilitators=list(event["facilitators"]),
                capacity=event.get("capacity"),
                auto_admit=event.get("auto_admit", False),
                registered=set(event.get("registered", ())),
                admitted=set(event.get("present", ())),
            )
            return
        s = self.session
        if s is None:
            return
        user: Any = event.get("user")
        if action == "started":
            s.state = LIVE
        elif action == "ended":
            s.state = ENDED
            s.floor, s.floor_until, s.checkin = None, None, None
        elif action == "waiting":
            s.waiting[user] = event["card"]
        elif action == "admitted":
            for admitted in event["users"]:
                s.waiting.pop(admitted, None)
                s.admitted.add(admitted)
        elif action in ("denied", "left_lobby"):
            s.waiting.pop(user, None)
        elif action == "locked":
            s.locked = event["locked"]
        elif action == "floor_only":
            s.floor_only = event["on"]
        elif action == "hand":
            if event["up"] and user not in s.queue:
                s.queue.append(user)
            elif not event["up"] and user in s.queue:
                s.queue.remove(user)
        elif action == "queue":
            s.queue = list(event["order"])
        elif action == "floor":
            if event.get("after", s.floor_seq) != s.floor_seq:
                return  # a timer for a share that had already ended
            until = event.get("until")
            s.floor, s.floor_until, s.floor_seq = user, None if until is None else parse_ts(until), event["seq"]
            if user in s.queue:
                s.queue.remove(user)
        elif action == "muted":
            (s.muted.add if event["muted"] else s.muted.discard)(user)
        elif action == "removed":
            s.removed.add(user)
            s.admitted.discard(user)
            s.waiting.pop(user, None)
            if user in s.queue:
                s.queue.remove(user)
            if s.floor == user:
                s.floor, s.floor_until = None, None
        elif action == "lead":
            s.facilitators = [user] + [f for f in s.facilitators if f != user]
        elif action == "pinned":
            s.pins[event["kind"]] = event["text"]
        elif action == "checkin":
            self._checkin(s, event)

    @staticmethod
    def _checkin(s: LiveSession, event: Mapping[str, Any]) -> None:
        step = event["step"]
        if step == "started":
            s.checkin = Checkin(list(event["order"]))
        elif s.checkin is None:
            return
        elif step in ("entry", "skipped"):
            s.checkin.done[event["user"]] = {k: event[k] for k in ANSWER if k in event}
            s.checkin.turn += 1
        elif step == "ended":
            s.checkin = None
