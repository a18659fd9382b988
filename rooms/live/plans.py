"""Planning the commands of a live session: each `plan_*` checks a command against the
state (`rooms.live.state`) and returns the body of the event to commit
(`rooms.live.events`), or raises the protocol's error.

A command is made by an `Actor`: a member and their standing in the room. Whether they may
is the permission matrix's to say (`rooms.permissions`), asked with their standing in the
session as it stands: one of its facilitators or not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rooms.clock import iso_ms
from rooms.errors import BadRequest, Conflict, Forbidden, NotFound
from rooms.live.events import (
    Admitted,
    CheckinEntry,
    CheckinStarted,
    Denied,
    Ended,
    Floor,
    FloorOnly,
    Hand,
    Knock,
    Lead,
    LeftLobby,
    Locked,
    Muted,
    Opened,
    Pinned,
    Queue,
    Removed,
    SessionBody,
    Started,
    Waiting,
)
from rooms.live.state import ANSWER, LIVE, LOBBY, LiveRoom, LiveSession
from rooms.permissions import Op, Standing, allowed, moderated, require
from rooms.service import clean_name, clean_text

PIN_KINDS = ("agenda", "resource")
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


def _need(room: LiveRoom) -> LiveSession:
    session = room.active
    if session is None:
        raise Conflict("There is no session in this room right now.")
    return session


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a command: their member id in the room, and their standing there."""

    id: str
    standing: Standing

    def in_session(self, session: LiveSession) -> Standing:
        return self.standing.in_session(session.facilitates(self.id))


def _require(op: Op, session: LiveSession, actor: Actor) -> None:
    require(op, actor.in_session(session))


def opening_texts(title: str | None, agreement: str | None) -> tuple[str, str]:
    """An ad-hoc session's title (one line of up to 80 characters; DEFAULT_TITLE when none)
    and group agreement (up to MAX_AGREEMENT; none when absent), as stored."""
    title = clean_name(title, what="Title") if title else DEFAULT_TITLE
    return title, "" if agreement is None else clean_text(agreement, max_chars=MAX_AGREEMENT, what="Agreement")


def co_facilitator_ids(value: object) -> list[str]:
    """The `co_facilitators` of an ad-hoc session: at most MAX_CO_FACILITATORS member ids, each
    named once, in the order given."""
    if isinstance(value, list) and len(value) > MAX_CO_FACILITATORS:
        raise BadRequest(f"A session has at most {MAX_CO_FACILITATORS} co-facilitators.")
    if not isinstance(value, list) or not all(isinstance(u, str) and 0 < len(u) <= MAX_USER_ID for u in value):
        raise BadRequest("`co_facilitators` must be a list of member ids.")
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
) -> Opened:
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


def plan_state(room: LiveRoom, actor: Actor, action: str) -> Started | Ended:
    """`start` (lobby → live) or `end` (→ ended)."""
    session = _need(room)
    _require(Op.SESSION_RUN, session, actor)
    if action == "start":
        if session.state != LOBBY:
            raise Conflict("The session has already started.")
        return {"action": "started"}
    return {"action": "ended"}


def plan_arrival(room: LiveRoom, user: str, card: Mapping[str, str]) -> Admitted | Waiting | None:
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


def plan_leave_lobby(room: LiveRoom, user: str) -> LeftLobby | None:
    """`user` is no longer waiting (their last waiting connection left): None when they were
    not. Private, as `waiting` is: who waited is for the facilitators to know."""
    session = room.active
    if session is None or user not in session.waiting:
        return None
    return {"action": "left_lobby", "user": user, "to": [user]}


def plan_admit(room: LiveRoom, actor: Actor, who: str | None) -> Admitted:
    """Admit one waiting member, or (`who` None) everyone waiting, within capacity."""
    session = _need(room)
    _require(Op.LOBBY, session, actor)
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


def plan_deny(room: LiveRoom, actor: Actor, who: str, message: str | None) -> Denied:
    session = _need(room)
    _require(Op.LOBBY, session, actor)
    if who not in session.waiting:
        raise NotFound("That person is not waiting in the lobby.")
    body: Denied = {"action": "denied", "user": who, "to": [who]}
    if message is not None:
        body["message"] = clean_text(message, max_chars=MAX_DENIAL, what="Message")
    return body


def plan_knock(room: LiveRoom, actor: Actor, who: str | None, text: str) -> Knock:
    """A private line between a waiting member (`user` in the event) and the facilitators;
    the envelope's `from` says who wrote it. Whoever may answer a knock answers `who`;
    anyone else knocks for themselves."""
    session = _need(room)
    text = clean_text(text, max_chars=MAX_KNOCK)
    if allowed(Op.KNOCK_ANSWER, actor.in_session(session)):
        if who is None or who not in session.waiting:
            raise NotFound("That person is not waiting in the lobby.")
        return {"action": "knock", "user": who, "text": text, "to": [who]}
    if actor.id not in session.waiting:
        raise Conflict("Knocking is for members waiting in the lobby.")
    return {"action": "knock", "user": actor.id, "text": text, "to": [actor.id]}


def plan_setting(room: LiveRoom, actor: Actor, name: str, on: bool) -> Locked | FloorOnly:
    """`locked` (no new arrivals in the lobby) or `floor_only` (only the floor holder speaks)."""
    session = _need(room)
    _require(Op.SESSION_RUN, session, actor)
    return {"action": "locked", "locked": on} if name == "locked" else {"action": "floor_only", "on": on}


def plan_hand(room: LiveRoom, actor: Actor, up: bool) -> Hand:
    session = _need(room)
    user = actor.id
    if not session.inside(user):
        raise Forbidden("Wait to be admitted first.")
    if up == (user in session.queue):
        raise Conflict("Your hand is already up." if up else "Your hand is not up.")
    return {"action": "hand", "user": user, "up": up}


def plan_floor(room: LiveRoom, actor: Actor, who: str | None, seconds: int | None, now_ms: int) -> Floor:
    """Give the floor to `who`, optionally for `seconds`; `who` None takes it back."""
    session = _need(room)
    _require(Op.FLOOR, session, actor)
    if session.state != LIVE:
        raise Conflict("The session has not started.")
    if who is not None and not session.inside(who):
        raise NotFound("That person is not in the session.")
    body: Floor = {"action": "floor", "user": who, "reason": "given" if who else "taken"}
    if who is not None and seconds is not None:
        if not 5 <= seconds <= MAX_FLOOR_SECONDS:
            raise BadRequest(f"A share lasts 5 to {MAX_FLOOR_SECONDS} seconds.")
        body["until"] = iso_ms(now_ms + seconds * 1000)
    return body


def plan_pass(room: LiveRoom, actor: Actor) -> Floor:
    """The floor holder passes it on: to the first raised hand, or to nobody."""
    session = _need(room)
    user = actor.id
    if session.floor != user:
        raise Conflict("You do not have the floor.")
    following = next((u for u in session.queue if u != user), None)
    return {"action": "floor", "user": following, "reason": "passed"}


def plan_time_up(session: LiveSession) -> Floor:
    """The timed share ended: the floor yields itself."""
    return {"action": "floor", "user": None, "reason": "time", "after": session.floor_seq}


def plan_queue(room: LiveRoom, actor: Actor, order: Sequence[str]) -> Queue:
    session = _need(room)
    _require(Op.FLOOR, session, actor)
    if sorted(order) != sorted(session.queue) or len(set(order)) != len(order):
        raise BadRequest("The new order must list exactly the raised hands.")
    return {"action": "queue", "order": list(order)}


def plan_mute(room: LiveRoom, actor: Actor, who: str, muted: bool, *, target: Standing) -> Muted:
    """Mute or unmute someone in the session; `target` is their standing in the room (whom
    moderation reaches: `rooms.permissions.moderated`)."""
    session = _need(room)
    _require(Op.MUTE, session, actor)
    if not moderated(target.in_session(session.facilitates(who))):
        raise Forbidden("Facilitators and admins cannot be muted.")
    if not session.inside(who):
        raise NotFound("That person is not in the session.")
    return {"action": "muted", "user": who, "muted": muted}


def plan_remove(room: LiveRoom, actor: Actor, who: str, *, target: Standing) -> Removed:
    """Remove someone in the session or in its lobby (`target`: as for `plan_mute`). The
    removal of someone waiting is private, as their waiting was."""
    session = _need(room)
    _require(Op.REMOVE, session, actor)
    if not moderated(target.in_session(session.facilitates(who))):
        raise Forbidden("Facilitators and admins cannot be removed.")
    if who in session.removed:
        raise Conflict("That person was already removed.")
    if not session.knows(who):
        raise NotFound("That person is not in the session or its lobby.")
    body: Removed = {"action": "removed", "user": who}
    if not session.inside(who):
        body["to"] = [who]
    return body


def plan_lead(room: LiveRoom, actor: Actor, who: str) -> Lead:
    """Hand the lead to another facilitator of the session (or take it, as one of them)."""
    session = _need(room)
    _require(Op.SESSION_RUN, session, actor)
    if not session.facilitates(who):
        if not session.knows(who):
            raise NotFound("That person is not in the session.")
        raise BadRequest("Only one of the session's facilitators can lead it.")
    if session.lead == who:
        raise Conflict("They already lead the session.")
    return {"action": "lead", "user": who}


def plan_pin(room: LiveRoom, actor: Actor, kind: str, text: str) -> Pinned:
    session = _need(room)
    _require(Op.SESSION_RUN, session, actor)
    if kind not in PIN_KINDS:
        raise BadRequest("A pin is an `agenda` or a `resource`.")
    return {"action": "pinned", "kind": kind, "text": clean_text(text, max_chars=MAX_PIN)}


def plan_checkin_start(room: LiveRoom, actor: Actor, present: Sequence[str]) -> CheckinStarted:
    """Walk the roster once: every participant present, in the order given (facilitators not)."""
    session = _need(room)
    _require(Op.CHECKIN_START, session, actor)
    if session.state != LIVE:
        raise Conflict("The session has not started.")
    if session.checkin is not None:
        raise Conflict("A check-in round is already going.")
    order = [u for u in present if u in session.admitted and not session.facilitates(u)]
    if not order:
        raise Conflict("Nobody is here to check in.")
    return {"action": "checkin", "step": "started", "order": order}


def plan_checkin_entry(
    room: LiveRoom, actor: Actor, mood: int | None, word: str | None, passed: bool
) -> list[SessionBody]:
    """The member whose turn it is posts a mood 1–5 and a word, or passes. Their entry is
    private to them and the facilitators; the next turn, and at the end the facilitators'
    summary, follow. Whoever may skip a turn, answering out of turn, skips it."""
    session = _need(room)
    if word is not None:  # checked whatever the answer: a word over its limit is never dropped silently
        word = clean_text(word, max_chars=MAX_WORD, what="Word")
    checkin = session.checkin
    if checkin is None or checkin.current is None:
        raise Conflict("There is no check-in round going.")
    user = actor.id
    if checkin.current != user and not allowed(Op.CHECKIN_SKIP, actor.in_session(session)):
        raise Conflict("It is not your turn.")
    member = checkin.current
    if checkin.current != user:  # moving past someone who is not answering
        entry: CheckinEntry = {
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
    events: list[SessionBody] = [entry]
    if checkin.turn + 1 >= len(checkin.order):
        done = {**checkin.done, member: {k: v for k, v in entry.items() if k in ANSWER}}
        summary = [{"user": u, **done[u]} for u in checkin.order]
        events.append({"action": "checkin", "step": "ended"})  # everyone: the round is over
        events.append({"action": "checkin", "step": "summary", "summary": summary, "to": []})
    else:
        events.append({"action": "checkin", "step": "turn", "user": checkin.order[checkin.turn + 1]})
    return events
