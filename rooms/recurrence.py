"""Recurrence rules: the RFC 5545 RRULE subset a session may carry, and its expansion.

A rule runs on naive LOCAL wall-clock time from the session's local start; placing each
start in the session's zone is `rooms.schedule`'s job. Supported: FREQ (DAILY, WEEKLY,
MONTHLY), INTERVAL, BYDAY (numbered with MONTHLY), BYMONTHDAY, COUNT and UNTIL.

Expansion costs what the window asked for holds, however far that window lies from the
series' start (`Recurrence`), and a rule that would walk for centuries to find its first
start, or its last, is refused when it is given (`canonical_rule`).

Pure: values in, values or `rooms.errors` out; no clock, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import islice
from typing import Any, Literal
from zoneinfo import ZoneInfo

from dateutil.rrule import DAILY, MONTHLY, WEEKLY, weekday
from dateutil.rrule import rrule as Rule

from rooms.errors import BadRequest

Freq = Literal[1, 2, 3]  # dateutil's MONTHLY, WEEKLY, DAILY

# Limits
MAX_RRULE = 200
MAX_INTERVAL = 99
MAX_COUNT = 1000
MAX_UNTIL = timedelta(days=3653)  # UNTIL at most ten years after the start
MAX_FIRST_GAP = timedelta(days=3653)  # a rule must occur within ten years of its start

_FREQS: dict[str, Freq] = {"DAILY": DAILY, "WEEKLY": WEEKLY, "MONTHLY": MONTHLY}
_DAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_BYDAY = re.compile(r"([+-]?[1-5])?(MO|TU|WE|TH|FR|SA|SU)")
_UNTIL = re.compile(r"(\d{8})(T\d{6}Z?)?")
_RULE_ORDER = ("FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "COUNT", "UNTIL")


@dataclass(frozen=True, slots=True)
class Recurrence:
    """An RRULE run on naive local time from `start`: FREQ and INTERVAL, the BYDAY or BYMONTHDAY
    filter, and `last`, the last local start it may yield (its UNTIL, or its COUNT-th start;
    None when the rule never ends).

    Expansion costs what the window holds, not how far the window lies from `start`: the rule
    restarts from a start moved forward by whole periods (INTERVAL days, weeks or months) to
    just before the window, which yields exactly the starts the original does from there on.
    A daily rule asked for a day in the year 9000 walked 2.6 million days first (4.5 s, the
    event loop blocked throughout); a day in 2100, 27,000 days (45 ms). Now about two periods.
    """

    start: datetime
    freq: Freq
    interval: int
    byweekday: tuple[weekday, ...] | None
    bymonthday: tuple[int, ...] | None
    last: datetime | None
    cut: bool = False  # a COUNT that runs past MAX_UNTIL: refused when a session is built

    def between(self, lo: datetime, hi: datetime) -> list[datetime]:
        """Local starts between `lo` and `hi`, both included."""
        if self.last is not None:
            hi = min(hi, self.last)
        if hi < lo:
            return []
        return self._rule(self._restart(lo)).between(lo, hi, inc=True)

    def first(self) -> datetime | None:
        found: datetime | None = self._rule(self.start).after(self.start, inc=True)
        return None if found is None or (self.last is not None and found > self.last) else found

    def _rule(self, dtstart: datetime, until: datetime | None = None) -> Rule:
        return Rule(
            dtstart=dtstart, freq=self.freq, interval=self.interval, byweekday=self.byweekday,
            bymonthday=self.bymonthday, until=until, cache=False,
        )  # fmt: skip

    def _restart(self, lo: datetime) -> datetime:
        """`start` moved forward by whole periods to at least one period before `lo`.

        Whole periods keep the phase: the weekday and the week (INTERVAL=2 weeks stay on
        their weeks), the place within INTERVAL, the time of day. A monthly restart is on
        day 1 of its month, which is valid in every month; the day of the month it meant
        is then explicit in `bymonthday` (see `recurrence`), so day 31 still skips short months.
        """
        start, n = self.start, self.interval
        if self.freq == MONTHLY:
            periods = ((lo.year - start.year) * 12 + lo.month - start.month) // n - 1
            if periods <= 0:
                return start
            month = start.year * 12 + start.month - 1 + periods * n
            return start.replace(year=month // 12, month=month % 12 + 1, day=1)
        days = n if self.freq == DAILY else 7 * n
        periods = (lo.date() - start.date()).days // days - 1
        return start + timedelta(days=periods * days) if periods > 0 else start


@lru_cache(maxsize=1024)
def recurrence(rrule: str, start: datetime, tz: str) -> Recurrence:
    """The `Recurrence` of a session's rule (canonical RRULE text, naive local start, zone).

    Cached: a COUNT rule's last start is found by walking it once from the start (at most
    ten years of periods: 3,653 days, about 10 ms for a daily rule that skips most days).
    """
    _, kwargs = parse_rrule(rrule, start, ZoneInfo(tz))
    byweekday = tuple(kwargs["byweekday"]) if "byweekday" in kwargs else None
    bymonthday = tuple(kwargs["bymonthday"]) if "bymonthday" in kwargs else None
    if kwargs["freq"] == MONTHLY and byweekday is None and bymonthday is None:
        bymonthday = (start.day,)  # what dateutil takes from dtstart, made explicit for restarts
    rule = Recurrence(start, kwargs["freq"], kwargs.get("interval", 1), byweekday, bymonthday, kwargs.get("until"))
    if "count" not in kwargs:
        return rule
    limit = start + MAX_UNTIL
    starts = list(islice(rule._rule(start, until=limit), kwargs["count"]))
    if len(starts) < kwargs["count"]:
        return replace(rule, last=limit, cut=True)  # read as ending ten years after its start
    return replace(rule, last=starts[-1])


def canonical_rule(text: object, start: datetime, tz: str) -> str:
    """The canonical text of a rule a session starting at local `start` in `tz` may carry.

    Refused (BadRequest): anything `parse_rrule` refuses, a rule that never occurs (or not
    within ten years of the start), and a COUNT that runs past ten years after the start.
    """
    canonical, kwargs = parse_rrule(text, start, ZoneInfo(tz))
    _check_occurs(kwargs, start)
    if recurrence(canonical, start, tz).cut:
        raise BadRequest("The RRULE's COUNT runs past ten years after the start; use a smaller COUNT.")
    return canonical


def parse_rrule(text: object, start: datetime, zone: ZoneInfo) -> tuple[str, dict[str, Any]]:
    """The canonical RRULE text and dateutil `rrule` arguments (all but dtstart)."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest("`rrule` must be a non-empty string or null.")
    if len(text) > MAX_RRULE:
        raise BadRequest(f"`rrule` is longer than {MAX_RRULE} characters.")
    text = text.strip().upper()
    if text.startswith("RRULE:"):
        text = text[len("RRULE:") :]
    if "DTSTART" in text:
        raise BadRequest("The RRULE must not contain DTSTART; the start is `start` in `tz`.")
    parts: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if not eq or not value:
            raise BadRequest("The RRULE is not of the form NAME=VALUE;NAME=VALUE.")
        if name not in _RULE_ORDER:
            raise BadRequest(f"RRULE part {name} is not supported (only {', '.join(_RULE_ORDER)}).")
        if name in parts:
            raise BadRequest(f"RRULE part {name} is given twice.")
        parts[name] = value
    if parts.get("FREQ") not in _FREQS:
        raise BadRequest("The RRULE needs FREQ=DAILY, WEEKLY or MONTHLY.")
    kwargs: dict[str, Any] = {"freq": _FREQS[parts["FREQ"]]}
    if "INTERVAL" in parts:
        kwargs["interval"] = _rule_int(parts["INTERVAL"], "INTERVAL", 1, MAX_INTERVAL)
    if "BYDAY" in parts:
        kwargs["byweekday"] = _byday(parts["BYDAY"], monthly=parts["FREQ"] == "MONTHLY")
    if "BYMONTHDAY" in parts:
        days = [_rule_int(d, "BYMONTHDAY", -31, 31) for d in parts["BYMONTHDAY"].split(",")]
        if 0 in days:
            raise BadRequest("BYMONTHDAY values are 1 to 31 or -31 to -1.")
        kwargs["bymonthday"] = days
    if "BYDAY" in parts and "BYMONTHDAY" in parts:
        raise BadRequest("Use BYDAY or BYMONTHDAY, not both.")
    if "COUNT" in parts and "UNTIL" in parts:
        raise BadRequest("Use COUNT or UNTIL, not both.")
    if "COUNT" in parts:
        kwargs["count"] = _rule_int(parts["COUNT"], "COUNT", 1, MAX_COUNT)
    if "UNTIL" in parts:
        until = _until(parts["UNTIL"], zone)
        if until - start > MAX_UNTIL:
            raise BadRequest("UNTIL may be at most ten years after the start.")
        kwargs["until"] = until
    canonical = ";".join(f"{name}={parts[name]}" for name in _RULE_ORDER if name in parts)
    return canonical, kwargs


def _byday(value: str, *, monthly: bool) -> list[weekday]:
    days: list[weekday] = []
    for item in value.split(","):
        match = _BYDAY.fullmatch(item)
        if match is None:
            raise BadRequest("BYDAY takes days like MO,TH (or 1MO, -1FR with FREQ=MONTHLY).")
        if match.group(1) and not monthly:
            raise BadRequest("A numbered BYDAY (like 2TU) needs FREQ=MONTHLY.")
        n = int(match.group(1)) if match.group(1) else None
        if n == 0:
            raise BadRequest("BYDAY numbers are 1 to 5 or -5 to -1.")
        days.append(weekday(_DAYS[match.group(2)], n))
    return days


def _until(value: str, zone: ZoneInfo) -> datetime:
    """UNTIL as a naive local time: a date means the whole of that local day; a time with Z is
    UTC (RFC 5545's form when DTSTART has a zone); one without is local."""
    match = _UNTIL.fullmatch(value)
    try:
        if match is None:
            raise ValueError(value)
        if match.group(2) is None:
            moment = datetime.strptime(value, "%Y%m%d") + timedelta(hours=23, minutes=59, seconds=59)
        else:
            moment = datetime.strptime(value.rstrip("Z"), "%Y%m%dT%H%M%S")
        if not 2000 <= moment.year <= 2110:  # ten years past the latest start; 9999 overflowed a zone
            raise ValueError(value)
    except ValueError as exc:
        raise BadRequest("UNTIL is a date (20270401) or a UTC time (20270401T000000Z), years 2000 to 2110.") from exc
    if match.group(2) is not None and value.endswith("Z"):
        return moment.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
    return moment


def _check_occurs(kwargs: Mapping[str, Any], start: datetime) -> None:
    """Refuse a rule that never occurs (say MONTHLY;INTERVAL=12;BYMONTHDAY=31 from February).

    dateutil searches such a rule up to the year 9999 (it stops only on a start that comes
    after its bound, and such a rule has none). The Gregorian calendar repeats every 400 years
    (weekdays, month lengths and leap days alike), so the same rule started a multiple of 400
    years later is the same pattern: started in the last 400 years before 9989 (ten years
    short of 9999, so a first start within ten years is still found), the search for a first
    start is short even when there is none. The worst case, DAILY;INTERVAL=7;BYDAY=MO from a
    Tuesday, would walk 400 years of weeks (66 ms; 155 ms from the year 9000): a DAILY rule
    whose INTERVAL is whole weeks stays on the weekday it starts on, so it is refused at once.
    """
    if kwargs["freq"] == DAILY and "byweekday" in kwargs and kwargs.get("interval", 1) % 7 == 0:
        if start.weekday() not in {day.weekday for day in kwargs["byweekday"]}:
            raise BadRequest("This RRULE never occurs (or not within ten years of the start).")
    shift = ((9988 - start.year) // 400) * 400
    probe_start = start.replace(year=start.year + shift)
    pattern = {k: v for k, v in kwargs.items() if k not in ("count", "until")}
    first = Rule(dtstart=probe_start, cache=False, **pattern).after(probe_start, inc=True)
    if first is None or first - probe_start > MAX_FIRST_GAP:
        raise BadRequest("This RRULE never occurs (or not within ten years of the start).")


def _rule_int(value: str, name: str, lo: int, hi: int) -> int:
    if not re.fullmatch(r"[+-]?\d{1,4}", value) or not lo <= int(value) <= hi:
        raise BadRequest(f"RRULE {name} must be a whole number from {lo} to {hi}.")
    return int(value)
