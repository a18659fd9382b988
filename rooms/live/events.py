"""The bodies of session events, as the planners make them and `LiveRoom.apply` folds them
(docs/protocol.md §5a.3). Each is committed as a durable room event `{"ev": "session",
"action": …}`; one with a `to` list is private: it goes to those users and the facilitators."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class Opened(TypedDict):
    action: Literal["opened"]
    key: str
    title: str
    starts_at: str
    ends_at: str
    agreement: str
    facilitators: list[str]  # the lead first
    capacity: int | None
    auto_admit: bool
    registered: list[str]
    present: list[str]  # in the room when it opened: in the session at once


class Started(TypedDict):
    action: Literal["started"]


class Ended(TypedDict):
    action: Literal["ended"]
    reason: NotRequired[str]  # "time": it ended by itself, long past its end


class Waiting(TypedDict):
    action: Literal["waiting"]
    user: str
    card: dict[str, str]
    to: list[str]


class Admitted(TypedDict):
    action: Literal["admitted"]
    users: list[str]


class Denied(TypedDict):
    action: Literal["denied"]
    user: str
    to: list[str]
    message: NotRequired[str]


class LeftLobby(TypedDict):
    action: Literal["left_lobby"]
    user: str
    to: list[str]


class Knock(TypedDict):
    action: Literal["knock"]
    user: str  # the member waiting (the envelope's `from` says who wrote it)
    text: str
    to: list[str]


class Locked(TypedDict):
    action: Literal["locked"]
    locked: bool


class FloorOnly(TypedDict):
    action: Literal["floor_only"]
    on: bool


class Hand(TypedDict):
    action: Literal["hand"]
    user: str
    up: bool


class Queue(TypedDict):
    action: Literal["queue"]
    order: list[str]


class Floor(TypedDict):
    action: Literal["floor"]
    user: str | None  # None: nobody has the floor
    reason: Literal["given", "taken", "passed", "time"]
    until: NotRequired[str]  # a timed share ends then
    after: NotRequired[int]  # (a timer's yield) the seq that gave the share it ends


class Muted(TypedDict):
    action: Literal["muted"]
    user: str
    muted: bool


class Removed(TypedDict):
    action: Literal["removed"]
    user: str
    to: NotRequired[list[str]]  # private when they were only waiting


class Lead(TypedDict):
    action: Literal["lead"]
    user: str
    reason: NotRequired[str]  # "dropped": the lead's last connection went


class Pinned(TypedDict):
    action: Literal["pinned"]
    kind: str
    text: str


class CheckinStarted(TypedDict):
    action: Literal["checkin"]
    step: Literal["started"]
    order: list[str]


class CheckinEntry(TypedDict):
    action: Literal["checkin"]
    step: Literal["entry", "skipped"]
    user: str
    to: list[str]
    mood: NotRequired[int]
    word: NotRequired[str]
    passed: NotRequired[bool]
    skipped: NotRequired[bool]


class CheckinTurn(TypedDict):
    action: Literal["checkin"]
    step: Literal["turn"]
    user: str


class CheckinEnded(TypedDict):
    action: Literal["checkin"]
    step: Literal["ended"]


class CheckinSummary(TypedDict):
    action: Literal["checkin"]
    step: Literal["summary"]
    summary: list[dict[str, object]]
    to: list[str]  # the facilitators alone


class Attendance(TypedDict):
    action: Literal["attendance"]
    user: str
    present: bool
    to: list[str]  # the facilitators alone


SessionBody = (
    Opened | Started | Ended | Waiting | Admitted | Denied | LeftLobby | Knock | Locked | FloorOnly | Hand | Queue
    | Floor | Muted | Removed | Lead | Pinned | CheckinStarted | CheckinEntry | CheckinTurn | CheckinEnded
    | CheckinSummary | Attendance
)  # fmt: skip
