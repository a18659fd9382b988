"""A live session in a room: lobby, admission, the talking piece, check-in, moderation.

Event-sourced: every change is a durable room event `{"ev": "session", "action": …}`,
committed with the room's seq and replayed by resume.

    state       LiveRoom.apply folds the events into the state every worker holds
    events      the body of each kind of session event
    plans       plan_*: a command checked against the state, as the event to commit
    seeing      where people are (lobby, room, out) and who sees what
    attendance  who attended, and for how long

An event with a `to` list is private: it goes to those users and to the facilitators.
"""

from rooms.live.attendance import attendance_report
from rooms.live.plans import (
    DEFAULT_TITLE,
    MAX_AGREEMENT,
    MAX_CO_FACILITATORS,
    MAX_DENIAL,
    MAX_FLOOR_SECONDS,
    MAX_KNOCK,
    MAX_PIN,
    MAX_USER_ID,
    MAX_WORD,
    PIN_KINDS,
    Actor,
    co_facilitator_ids,
    opening_texts,
    plan_admit,
    plan_arrival,
    plan_checkin_entry,
    plan_checkin_start,
    plan_deny,
    plan_floor,
    plan_hand,
    plan_knock,
    plan_lead,
    plan_leave_lobby,
    plan_mute,
    plan_open,
    plan_pass,
    plan_pin,
    plan_queue,
    plan_remove,
    plan_setting,
    plan_state,
    plan_time_up,
)
from rooms.live.seeing import (
    LOBBY_ACTIONS,
    NO_MOVES,
    Moves,
    Place,
    for_lobby,
    lobby_sees,
    may_send,
    moves,
    place,
    session_view,
    visible,
)
from rooms.live.state import ENDED, LIVE, LOBBY, Checkin, LiveRoom, LiveSession

__all__ = [
    "DEFAULT_TITLE", "ENDED", "LIVE", "LOBBY", "LOBBY_ACTIONS", "MAX_AGREEMENT", "MAX_CO_FACILITATORS", "MAX_DENIAL",
    "MAX_FLOOR_SECONDS", "MAX_KNOCK", "MAX_PIN", "MAX_USER_ID", "MAX_WORD", "NO_MOVES", "PIN_KINDS", "Actor",
    "Checkin", "LiveRoom", "LiveSession", "Moves", "Place", "attendance_report", "co_facilitator_ids", "for_lobby",
    "lobby_sees", "may_send", "moves", "opening_texts", "place", "plan_admit", "plan_arrival", "plan_checkin_entry",
    "plan_checkin_start", "plan_deny", "plan_floor", "plan_hand", "plan_knock", "plan_lead", "plan_leave_lobby",
    "plan_mute", "plan_open", "plan_pass", "plan_pin", "plan_queue", "plan_remove", "plan_setting", "plan_state",
    "plan_time_up", "session_view", "visible",
]  # fmt: skip
