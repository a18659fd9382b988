"""Open hours of a drop-in room: when staff are around. Outside them the room stays open for
peer support, and every joiner is told plainly that nobody from the team may answer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from rooms.errors import BadRequest

_TIME = re.compile(r"([01]\d|2[0-3]):[0-5]\d")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def check_hours(value: object) -> dict[str, Any] | None:
    """`{"tz": "Europe/London", "days": [0..6] (Monday is 0), "from": "20:00", "to": "02:00"}`,
    or None for always open. `to` before `from` means the hours run past midnight."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"tz", "days", "from", "to"}:
        raise BadRequest("Open hours need exactly `tz`, `days`, `from` and `to`.")
    tz, days, start, end = value["tz"], value["days"], value["from"], value["to"]
    if not isinstance(tz, str) or tz not in _zones():  # ZoneInfo("Europe") raises IsADirectoryError
        raise BadRequest("`tz` must be an IANA time zone such as Europe/London.")
    if not isinstance(days, list) or not days or any(not isinstance(d, int) or not 0 <= d <= 6 for d in days):
        raise BadRequest("`days` lists weekdays from 0 (Monday) to 6 (Sunday).")
    if not all(isinstance(t, str) and _TIME.fullmatch(t) for t in (start, end)) or start == end:
        raise BadRequest("`from` and `to` are different times as HH:MM.")
    return {"tz": tz, "days": sorted(set(days)), "from": start, "to": end}


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones() - {"localtime", "Factory", "posixrules"})


def is_open(hours: Mapping[str, Any], now: datetime) -> bool:
    local = now.astimezone(ZoneInfo(hours["tz"]))
    clock, day = local.strftime("%H:%M"), local.weekday()
    if hours["from"] < hours["to"]:
        return day in hours["days"] and hours["from"] <= clock < hours["to"]
    # Past midnight: the evening belongs to its own day, the small hours to the day before.
    return (day in hours["days"] and clock >= hours["from"]) or ((day - 1) % 7 in hours["days"] and clock < hours["to"])


def status(hours: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """What a joiner is told: the hours, whether the team is around now, and a plain notice."""
    days = ", ".join(DAYS[d] for d in hours["days"])
    span = f"{hours['from']}–{hours['to']} ({hours['tz']})"
    open_now = is_open(hours, now)
    notice = (
        f"The team is here {days}, {span}."
        if open_now
        else f"Outside open hours: the team is here {days}, {span}. Others may still be around to talk. "
        "If you are in danger, call your local emergency number."
    )
    return {**hours, "open": open_now, "notice": notice}
