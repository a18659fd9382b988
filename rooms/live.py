"""A live session in a room: lobby, admission, the talking piece, check-in, moderation.

Event-sourced: every change is a durable room event `{"ev": "session", "action": …}`,
committed with the room's seq and replayed by resume. `LiveRoom.apply` folds those events
into the state every worker holds, in seq order, so any worker can serve any member and
they all agree. The `plan_*` functions check a command against that state and return the
event body to commit; they raise the protocol's errors.

An event with a `to` list is private: it goes to those users and to the facilitators.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rooms.clock import iso_ms, parse_ts
from rooms.errors import BadRequest, Conflict, Forbidden, NotFound
from rooms.service import clean_name, clean_text

LOBBY, LIVE, ENDED = "lobby", "live", "ended"


PIN_KINDS = ("agenda", "resource")
ANSWER = ("mood", "word", "passed", "skipped")  # what a check-in entry records
# What a member waiting in the lobby sees of the session, besides what is addressed to them.
LOBBY_ACTIONS = frozenset({"opened", "started", "ended", "locked", "pinned"})
MAX_FLOOR_SECONDS = 3600
# Text limits, in characters after NFC (docs/protocol.md §6): over one is `too_large`.
MAX_AGREEMENT = 2000
MAX_PIN = 2000
MAX_KNOCK = 1000
MAX_DENIAL = 500
MAX_WORD = 40
MAX_CO_FACILITATORS = 10
MAX_USER_ID = 64
DEFAULT_TITLE = "Live session"


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


# Planning commands: the state says whether they may happen, and what event says they did.


def _need(room: LiveRoom) -> LiveSession:
    session = room.active
    if session is None:
        raise Conflict("There is no session in this room right now.")
    return session


def _facilitator(session: LiveSession, user: str) -> None:
    if not session.facilitates(user):
        raise Forbidden("Only the session's facilitators can do that.")


def opening_texts(title: str | None, agreement: str | None) -> tuple[str, str]:
    """An ad-hoc session's title (one line of up to 80 characters; DEFAULT_TITLE when none)
    and group agreement (up to MAX_AGREEMENT; none when absent), as stored."""
    title = clean_name(title, what="Title") if title else DEFAULT_TITLE
    return title, "" if agreement is None else clean_text(agreement, max_chars=MAX_AGREEMENT, what="Agreement")


def co_facilitator_ids(value: object) -> list[str]:
    """The `co_facilitators` of an ad-hoc session: at most MAX_CO_FACILITATORS user ids, each
    named once, in the order given."""
    if isinstance(value, list) and len(value) > MAX_CO_FACILITATORS:
        raise BadRequest(f"A session has at most {MAX_CO_FACILITATORS} co-facilitators.")
    if not isinstance(value, list) or not all(isinstance(u, str) and 0 < len(u) <= MAX_USER_ID for u in value):
        raise BadRequest("`co_facilitators` must be a list of user ids.")
    return list(dict.fromkeys(value))


def plan_open(
    room: LiveRoom,
    *,
    key: str,
    title: str,
    starts_at: str,
    ends_at: str,
    agreement: str,
    facilitators: Sequence[str],
    capacity: int | None,
    auto_admit: bool,
    registered: Sequence[str],
    present: Sequence[str],
) -> dict[str, Any]:
    """Open the lobby. Members already in the room are in the session; later arrivals wait."""
    if room.active is not None:
        raise Conflict("A session is already open in this room.")
    return {
        "action": "opened",
        "key": key,
        "title": title,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "agreement": agreement,
        "facilitators": list(facilitators),
        "capacity": capacity,
        "auto_admit": auto_admit,
        "registered": sorted(registered),
        "present": sorted(set(present)),
    }


def plan_state(room: LiveRoom, user: str, action: str) -> dict[str, Any]:
    """`start` (lobby → live) or `end` (→ ended), by a facilitator."""
    session = _need(room)
    _facilitator(session, user)
    if action == "start":
        if session.state != LOBBY:
            raise Conflict("The session has already started.")
        return {"action": "started"}
    return {"action": "ended"}


def plan_arrival(room: LiveRoom, user: str, card: Mapping[str, str]) -> dict[str, Any] | None:
    """What happens when `user` joins the room while a session is open: nothing (they are in
    already, or facilitate), a `waiting` event, or an automatic admission."""
    session = room.active
    if session is None or session.inside(user):
        return None
    if user in session.removed:
        raise Forbidden("You were removed from this session.")
    if user in session.waiting:
        return None
    if session.auto_admit and user in session.registered and _has_room(session, 1):
        return {"action": "admitted", "users": [user]}
    if session.locked:
        raise Forbidden("This session is locked. Please try again later.")
    return {"action": "waiting", "user": user, "card": dict(card), "to": [user]}


def _has_room(session: LiveSession, more: int) -> bool:
    members = session.admitted.difference(session.facilitators)  # facilitators take no place
    return session.capacity is None or len(members) + more <= session.capacity


def plan_leave_lobby(room: LiveRoom, user: str) -> dict[str, Any] | None:
    """`user` is no longer waiting (their last waiting connection left): None when they were
    not. Private, as `waiting` is: who waited is for the facilitators to know."""
    session = room.active
    if session is None or user not in session.waiting:
        return None
    return {"action": "left_lobby", "user": user, "to": [user]}


def plan_admit(room: LiveRoom, user: str, who: str | None) -> dict[str, Any]:
    """Admit one waiting member, or (`who` None) everyone waiting, within capacity."""
    session = _need(room)
    _facilitator(session, user)
    if who is None:
        users = list(session.waiting)
        if not users:
            raise Conflict("Nobody is waiting.")
    elif who not in session.waiting:
        raise NotFound("That person is not waiting in the lobby.")
    else:
        users = [who]
    if not _has_room(session, len(users)):
        raise Conflict("The session is full.")
    return {"action": "admitted", "users": users}


def plan_deny(room: LiveRoom, user: str, who: str, message: str | None) -> dict[str, Any]:
    session = _need(room)
    _facilitator(session, user)
    if who not in session.waiting:
        raise NotFound("That person is not waiting in the lobby.")
    body: dict[str, Any] = {"action": "denied", "user": who, "to": [who]}
    if message is not None:
        body["message"] = clean_text(message, max_chars=MAX_DENIAL, what="Message")
    return body


def plan_knock(room: LiveRoom, user: str, who: str | None, text: str) -> dict[str, Any]:
    """A private line between a waiting member (`user` in the event) and the facilitators;
    the envelope's `from` says who wrote it."""
    session = _need(room)
    text = clean_text(text, max_chars=MAX_KNOCK)
    if session.facilitates(user):
        if who is None or who not in session.waiting:
            raise NotFound("That person is not waiting in the lobby.")
        return {"action": "knock", "user": who, "text": text, "to": [who]}
    if user not in session.waiting:
        raise Conflict("Knocking is for members waiting in the lobby.")
    return {"action": "knock", "user": user, "text": text, "to": [user]}


def plan_setting(room: LiveRoom, user: str, name: str, on: bool) -> dict[str, Any]:
    """`locked` (no new arrivals in the lobby) or `floor_only` (only the floor holder speaks)."""
    session = _need(room)
    _facilitator(session, user)
    return {"action": "locked", "locked": on} if name == "locked" else {"action": "floor_only", "on": on}


def plan_hand(room: LiveRoom, user: str, up: bool) -> dict[str, Any]:
    session = _need(room)
    if not session.inside(user):
        raise Forbidden("Wait to be admitted first.")
    if up == (user in session.queue):
        raise Conflict("Your hand is already up." if up else "Your hand is not up.")
    return {"action": "hand", "user": user, "up": up}


def plan_floor(room: LiveRoom, user: str, who: str | None, seconds: int | None, now_ms: int) -> dict[str, Any]:
    """Give the floor to `who` (facilitators), optionally for `seconds`; `who` None takes it back."""
    session = _need(room)
    _facilitator(session, user)
    if session.state != LIVE:
        raise Conflict("The session has not started.")
    if who is not None and not session.inside(who):
        raise NotFound("That person is not in the session.")
    body: dict[str, Any] = {"action": "floor", "user": who, "reason": "given" if who else "taken"}
    if who is not None and seconds is not None:
        if not 5 <= seconds <= MAX_FLOOR_SECONDS:
            raise BadRequest(f"A share lasts 5 to {MAX_FLOOR_SECONDS} seconds.")
        body["until"] = iso_ms(now_ms + seconds * 1000)
    return body


def plan_pass(room: LiveRoom, user: str) -> dict[str, Any]:
    """The floor holder passes it on: to the first raised hand, or to nobody."""
    session = _need(room)
    if session.floor != user:
        raise Conflict("You do not have the floor.")
    following = next((u for u in session.queue if u != user), None)
    return {"action": "floor", "user": following, "reason": "passed"}


def plan_time_up(session: LiveSession) -> dict[str, Any]:
    """The timed share ended: the floor yields itself."""
    return {"action": "floor", "user": None, "reason": "time", "after": session.floor_seq}


def plan_queue(room: LiveRoom, user: str, order: Sequence[str]) -> dict[str, Any]:
    session = _need(room)
    _facilitator(session, user)
    if sorted(order) != sorted(session.queue) or len(set(order)) != len(order):
        raise BadRequest("The new order must list exactly the raised hands.")
    return {"action": "queue", "order": list(order)}


def plan_mute(room: LiveRoom, user: str, who: str, muted: bool, *, staff: bool) -> dict[str, Any]:
    """Mute or unmute someone in the session. `staff`: `who` is one of the room's staff (its
    facilitators, admins), whom a session's facilitators do not moderate."""
    session = _need(room)
    _facilitator(session, user)
    if staff or session.facilitates(who):
        raise Forbidden("Facilitators and admins cannot be muted.")
    if not session.inside(who):
        raise NotFound("That person is not in the session.")
    return {"action": "muted", "user": who, "muted": muted}


def plan_remove(room: LiveRoom, user: str, who: str, *, staff: bool) -> dict[str, Any]:
    """Remove someone in the session or in its lobby (`staff`: as for `plan_mute`). The
    removal of someone waiting is private, as their waiting was."""
    session = _need(room)
    _facilitator(session, user)
    if staff or session.facilitates(who):
        raise Forbidden("Facilitators and admins cannot be removed.")
    if who in session.removed:
        raise Conflict("That person was already removed.")
    if not session.knows(who):
        raise NotFound("That person is not in the session or its lobby.")
    body: dict[str, Any] = {"action": "removed", "user": who}
    if not session.inside(who):
        body["to"] = [who]
    return body


def plan_lead(room: LiveRoom, user: str, who: str) -> dict[str, Any]:
    """Hand the lead to another facilitator of the session (or take it, as one of them)."""
    session = _need(room)
    _facilitator(session, user)
    if not session.facilitates(who):
        if not session.knows(who):
            raise NotFound("That person is not in the session.")
        raise BadRequest("Only one of the session's facilitators can lead it.")
    if session.lead == who:
        raise Conflict("They already lead the session.")
    return {"action": "lead", "user": who}


def plan_pin(room: LiveRoom, user: str, kind: str, text: str) -> dict[str, Any]:
    session = _need(room)
    _facilitator(session, user)
    if kind not in PIN_KINDS:
        raise BadRequest("A pin is an `agenda` or a `resource`.")
    return {"action": "pinned", "kind": kind, "text": clean_text(text, max_chars=MAX_PIN)}


def plan_checkin_start(room: LiveRoom, user: str, present: Sequence[str]) -> dict[str, Any]:
    """Walk the roster once: every participant present, in the order given (facilitators not)."""
    session = _need(room)
    _facilitator(session, user)
    if session.state != LIVE:
        raise Conflict("The session has not started.")
    if session.checkin is not None:
        raise Conflict("A check-in round is already going.")
    order = [u for u in present if u in session.admitted and not session.facilitates(u)]
    if not order:
        raise Conflict("Nobody is here to check in.")
    return {"action": "checkin", "step": "started", "order": order}


def plan_checkin_entry(
    room: LiveRoom, user: str, mood: int | None, word: str | None, passed: bool
) -> list[dict[str, Any]]:
    """The member whose turn it is posts a mood 1–5 and a word, or passes. Their entry is
    private to them and the facilitators; the next turn, and at the end the facilitators'
    summary, follow."""
    session = _need(room)
    if word is not None:  # checked whatever the answer: a word over its limit is never dropped silently
        word = clean_text(word, max_chars=MAX_WORD, what="Word")
    checkin = session.checkin
    if checkin is None or checkin.current is None:
        raise Conflict("There is no check-in round going.")
    if checkin.current != user and not session.facilitates(user):
        raise Conflict("It is not your turn.")
    member = checkin.current
    if checkin.current != user:  # a facilitator moves past someone who is not answering
        entry: dict[str, Any] = {
            "action": "checkin",
            "step": "skipped",
            "user": member,
            "skipped": True,
            "to": [member],
        }
    elif passed:
        entry = {"action": "checkin", "step": "entry", "user": member, "passed": True, "to": [member]}
    else:
        if mood is None or not 1 <= mood <= 5:
            raise BadRequest("A mood is a number from 1 to 5 (or pass).")
        entry = {"action": "checkin", "step": "entry", "user": member, "mood": mood, "to": [member]}
        if word is not None:
            entry["word"] = word
    events = [entry]
    if checkin.turn + 1 >= len(checkin.order):
        done = {**checkin.done, member: {k: entry[k] for k in ANSWER if k in entry}}
        summary = [{"user": u, **done[u]} for u in checkin.order]
        events.append({"action": "checkin", "step": "ended"})  # everyone: the round is over
        events.append({"action": "checkin", "step": "summary", "summary": summary, "to": []})
    else:
        events.append({"action": "checkin", "step": "turn", "user": checkin.order[checkin.turn + 1]})
    return events


def attendance_report(events: Sequence[Mapping[str, Any]], now: int) -> dict[str, Any]:
    """From a session's events: who attended and for how long (never what they said)."""
    opened = next((e for e in events if e["action"] == "opened"), None)
    if opened is None:
        return {"session": None, "attendees": []}
    opened_at = parse_ts(opened["ts"])
    there = list(opened.get("present", ()))
    since: dict[str, int] = dict.fromkeys(there, opened_at)  # in the room when it opened
    seconds: dict[str, float] = dict.fromkeys(there, 0.0)
    end = now
    for event in events:
        if event["action"] == "ended":
            end = parse_ts(event["ts"])
        if event["action"] != "attendance":
            continue
        user, at = event["user"], parse_ts(event["ts"])
        seconds.setdefault(user, 0.0)
        if event["present"]:
            since.setdefault(user, at)
        elif user in since:
            seconds[user] += (at - since.pop(user)) / 1000
    for user, at in since.items():
        seconds[user] += max(0, end - at) / 1000
    attendees = [{"user": u, "seconds": round(t)} for u, t in sorted(seconds.items(), key=lambda kv: -kv[1])]
    return {"session": {"key": opened["key"], "title": opened["title"]}, "attendees": attendees}


# Where people are: the lobby, the room, or out


class Place(StrEnum):
    ROOM = "room"
    LOBBY = "lobby"
    OUT = "out"  # removed from the session: their sockets in the room close (4403)


def place(room: LiveRoom, user: str, *, lobby: bool) -> Place:
    """Where someone joining goes, by the session as it stands when their join completes
    (it may have moved on while the join read the store): out if they were removed, the
    lobby if they were to wait and still must, else the room."""
    session = room.active
    if session is not None and user in session.removed:
        return Place.OUT
    if lobby and session is not None and not session.inside(user):
        return Place.LOBBY
    return Place.ROOM


@dataclass(frozen=True, slots=True)
class Moves:
    """What a session event does to the people in the room: whom it lets in from the
    lobby (`everyone`, when the session ends), and whom it puts out."""

    admit: frozenset[str] = frozenset()
    everyone: bool = False
    out: str | None = None

    def admits(self, user: str) -> bool:
        return self.everyone or user in self.admit


NO_MOVES = Moves()


def moves(event: Mapping[str, Any]) -> Moves:
    action = event["action"]
    if action == "admitted":
        return Moves(admit=frozenset(event["users"]))
    if action == "ended":
        return Moves(everyone=True)
    if action == "removed":
        return Moves(out=event["user"])
    return NO_MOVES


# Who sees what


def visible(event: Mapping[str, Any], user: str, *, facilitator: bool) -> bool:
    """Whether a durable event may be shown to `user` (a private `to` list, else everyone)."""
    to = event.get("to")
    return to is None or facilitator or user in to


def for_lobby(event: Mapping[str, Any], user: str) -> Mapping[str, Any] | None:
    """The event as a member waiting in the lobby may see it, or None: who else waits, who
    is in and who registered stay out of it."""
    if not lobby_sees(event, user):
        return None
    if event["action"] == "opened":
        return {k: v for k, v in event.items() if k not in ("present", "registered")}
    if event["action"] == "admitted":
        return {**event, "users": [user]}
    return event


def lobby_sees(event: Mapping[str, Any], user: str) -> bool:
    """Whether a member waiting in the lobby sees an event: the session's outline, and what
    concerns them (a knock, a denial, their admission); nothing of the room itself."""
    if event["ev"] != "session":
        return False
    action = event["action"]
    return action in LOBBY_ACTIONS or user in event.get("to", ()) or user in event.get("users", ())


def may_send(room: LiveRoom, user: str, *, staff: bool = False, message: bool = True) -> None:
    """Raise unless `user` may act in the room now: nobody waiting or removed may (edit,
    react, type...); for a `message`, mute and floor-only mode apply too. The room's staff
    (its facilitators, admins) always may."""
    session = room.active
    if session is None or staff or session.facilitates(user):
        return
    if user in session.removed:
        raise Forbidden("You were removed from this session.")
    if not session.inside(user):
        raise Forbidden("You are waiting in the lobby; the facilitator will let you in.")
    if not message:
        return
    if user in session.muted:
        raise Forbidden("The facilitator has muted you for now.")
    if session.floor_only and session.state == LIVE and session.floor != user:
        raise Forbidden("Only the person with the floor can post right now. Raise your hand.")
