"""Attendance: who attended a session and for how long, from its events (never what they said)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rooms.clock import parse_ts


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
