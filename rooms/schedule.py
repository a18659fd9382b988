"""Scheduled sessions of group rooms: their rules, and the occurrences they expand to.

A session holds its start as a LOCAL wall-clock time in a named IANA zone, plus an optional
RFC 5545 RRULE. Expansion runs the rule on the local time and only then places each start
in the zone, so a weekly 19:00 Europe/London session stays at 19:00 local across daylight-
saving changes (18:00Z in summer, 19:00Z in winter). A local time that does not exist (the
hour skipped in spring) is read with the offset before the gap, and one that happens twice
(the hour repeated in autumn) is the first of the two, as RFC 5545 says.

An occurrence is named forever by its key: its ORIGINAL start in UTC. Cancelling one keeps
it listed with `cancelled=True`; moving one gives it a new start under the same key.

Every date a client gives lies in the years 2000 to 2100, and expansion costs what the
window asked for holds, however far that window lies from the series' start (`Recurrence`).

Pure: values in, values or `rooms.errors` out; no clock, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from itertools import islice
from typing import Any, Literal, NewType
from zoneinfo import ZoneInfo, available_timezones

from dateutil.rrule import DAILY, MONTHLY, WEEKLY, weekday
from dateutil.rrule import rrule as Rule

from rooms.errors import BadRequest, Conflict
from rooms.model import RoomId, UserId
from rooms.service import clean_name, clean_text

SessionId = NewType("SessionId", str)
Freq = Literal[1, 2, 3]  # dateutil's MONTHLY, WEEKLY, DAILY

# Limits
MAX_TITLE = 120
MAX_DESCRIPTION = 4000
MAX_AGREEMENT = 2000
MAX_REASON = 500
MAX_RRULE = 200
DURATION = (5, 600)
CAPACITY = (1, 1000)
LOBBY = (0, 60)
REMINDER = (0, 1440)
MAX_INTERVAL = 99
MAX_COUNT = 1000
MAX_UNTIL = timedelta(days=3653)  # UNTIL at most ten years after the start
MAX_WINDOW = timedelta(days=366)  # the longest span any one expansion covers
MAX_FIRST_GAP = timedelta(days=3653)  # a rule must occur within ten years of its start

# Reach
EARLIEST = datetime(1999, 12, 31, tzinfo=UTC)  # local times of the years 2000 to 2100, in any
LATEST = datetime(2101, 1, 2, tzinfo=UTC)  # zone, lie between these two instants
HORIZON = timedelta(days=366)  # registration, cancellation and moves reach this far ahead

# Defaults
DEFAULT_LOBBY = 10
DEFAULT_REMINDER = 30

LOCAL_FORMAT = "%Y-%m-%dT%H:%M"
_LOCAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
_KEY = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_FREQS: dict[str, Freq] = {"DAILY": DAILY, "WEEKLY": WEEKLY, "MONTHLY": MONTHLY}
_DAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_BYDAY = re.compile(r"([+-]?[1-5])?(MO|TU|WE|TH|FR|SA|SU)")
_UNTIL = re.compile(r"(\d{8})(T\d{6}Z?)?")
_RULE_ORDER = ("FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "COUNT", "UNTIL")
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})

FIELDS = frozenset(
    {
        "title",
        "description",
        "start",
        "tz",
        "duration_minutes",
        "rrule",
        "capacity",
        "lobby_minutes",
        "reminder_minutes",
        "auto_admit",
        "agreement",
    }
)


@dataclass(frozen=True, slots=True)
class Change:
    """An exception to the rule for one occurrence: cancelled, or moved to a new local start."""

    key: datetime
    cancelled: bool = False
    moved_to: datetime | None = None  # naive, local to the session's zone
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One meeting of a session. `key` is its original start (UTC), unchanged by a move;
    `start` and `end` are aware UTC datetimes; `facilitators` has the lead first."""

    session: SessionId
    room: RoomId
    key: datetime
    start: datetime
    end: datetime
    tz: str
    title: str
    agreement: str
    lobby_minutes: int
    reminder_minutes: int
    auto_admit: bool
    capacity: int | None
    cancelled: bool
    moved: bool
    facilitators: tuple[UserId, ...]
    reason: str | None = None

    @property
    def key_text(self) -> str:
        return utc_text(self.key)

    @property
    def local_start(self) -> str:
        return self.start.astimezone(ZoneInfo(self.tz)).strftime(LOCAL_FORMAT)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "session": self.session,
            "room": self.room,
            "key": self.key_text,
            "start": utc_text(self.start),
            "end": utc_text(self.end),
            "local_start": self.local_start,
            "tz": self.tz,
            "title": self.title,
            "cancelled": self.cancelled,
            "moved": self.moved,
            "capacity": self.capacity,
        }
        if self.reason is not None:
            wire["reason"] = self.reason
        return wire


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


@dataclass(frozen=True, slots=True)
class Session:
    """A scheduled session of a group room; `start` is naive local time in zone `tz`."""

    id: SessionId
    room: RoomId
    title: str
    start: datetime
    tz: str
    duration_minutes: int
    facilitators: tuple[UserId, ...]  # the lead first, then co-facilitators
    description: str = ""
    rrule: str | None = None  # canonical: FREQ=…;INTERVAL=…;BYDAY=…;BYMONTHDAY=…;COUNT=…;UNTIL=…
    capacity: int | None = None
    lobby_minutes: int = DEFAULT_LOBBY
    reminder_minutes: int = DEFAULT_REMINDER
    auto_admit: bool = False
    agreement: str = ""

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def duration(self) -> timedelta:
        return timedelta(minutes=self.duration_minutes)

    def rule(self) -> Recurrence | None:
        return None if self.rrule is None else recurrence(self.rrule, self.start, self.tz)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room": self.room,
            "title": self.title,
            "description": self.description,
            "start": self.start.strftime(LOCAL_FORMAT),
            "tz": self.tz,
            "duration_minutes": self.duration_minutes,
            "rrule": self.rrule,
            "capacity": self.capacity,
            "lobby_minutes": self.lobby_minutes,
            "reminder_minutes": self.reminder_minutes,
            "auto_admit": self.auto_admit,
            "agreement": self.agreement,
            "facilitators": list(self.facilitators),
        }

    # Expansion

    def _local_starts(self, lo: datetime, hi: datetime) -> list[datetime]:
        """Original local starts between naive local `lo` and `hi`, both included."""
        rule = self.rule()
        if rule is None:
            return [self.start] if lo <= self.start <= hi else []
        return rule.between(lo, hi)

    def _originals(self, start: datetime, end: datetime) -> list[datetime]:
        """Original starts (keys, UTC) in [start, end), from the rule on local time."""
        zone = self.zone
        margin = timedelta(days=1)  # a UTC window is a little wider or narrower in local time
        lo = start.astimezone(zone).replace(tzinfo=None) - margin
        hi = end.astimezone(zone).replace(tzinfo=None) + margin
        keys = (to_utc(local, zone) for local in self._local_starts(lo, hi))
        return [key for key in keys if start <= key < end]

    def is_occurrence(self, key: datetime) -> bool:
        """Whether `key` is an original start of this session (never one outside the years
        2000 to 2100: a registration stored before keys were bounded names nothing)."""
        return EARLIEST <= key < LATEST and key in self._originals(key, key + timedelta(seconds=1))

    def _occurrence(self, key: datetime, change: Change | None) -> Occurrence:
        start = key
        moved = change is not None and change.moved_to is not None
        if change is not None and change.moved_to is not None:
            start = to_utc(change.moved_to, self.zone)
        return Occurrence(
            session=self.id,
            room=self.room,
            key=key,
            start=start,
            end=start + self.duration,
            tz=self.tz,
            title=self.title,
            agreement=self.agreement,
            lobby_minutes=self.lobby_minutes,
            reminder_minutes=self.reminder_minutes,
            auto_admit=self.auto_admit,
            capacity=self.capacity,
            cancelled=change is not None and change.cancelled,
            moved=moved,
            facilitators=self.facilitators,
            reason=change.reason if change is not None else None,
        )

    def occurrences(self, start: datetime, end: datetime, changes: Mapping[datetime, Change]) -> list[Occurrence]:
        """Occurrences whose (possibly moved) start lies in [start, end), by start.

        Cancelled ones are included and flagged. A window is at most MAX_WINDOW long.
        """
        check_window(start, end)
        keys = set(self._originals(start, end))
        zone = self.zone
        for key, change in changes.items():  # moved into the window from outside it
            if change.moved_to is None or key in keys or not start <= to_utc(change.moved_to, zone) < end:
                continue
            if self.is_occurrence(key):
                keys.add(key)
        found = (self._occurrence(key, changes.get(key)) for key in keys)
        return sorted((o for o in found if start <= o.start < end), key=lambda o: (o.start, o.key))

    def occurrence(self, key: datetime, changes: Mapping[datetime, Change]) -> Occurrence | None:
        """The occurrence named `key`, or None when the session has no such original start."""
        return self._occurrence(key, changes.get(key)) if self.is_occurrence(key) else None

    def span(self, changes: Iterable[Change] = ()) -> tuple[datetime, datetime | None]:
        """The first start, and the last end or a bound on it (the UNTIL plus the duration; None
        when the rule never ends), in UTC, moves included."""
        zone = self.zone
        rule = self.rule()
        if rule is None:
            first: datetime = to_utc(self.start, zone)
            last: datetime | None = first + self.duration
        else:
            local_first = rule.first()
            if local_first is None:
                raise BadRequest("The RRULE has no occurrence.")
            first = to_utc(local_first, zone)
            last = None if rule.last is None else to_utc(rule.last, zone) + self.duration
        for change in changes:
            if change.moved_to is not None:
                moved = to_utc(change.moved_to, zone)
                first = min(first, moved)
                last = None if last is None else max(last, moved + self.duration)
        return first, last


# Validation


def build_session(
    *,
    id: SessionId,
    room: RoomId,
    facilitators: tuple[UserId, ...],
    fields: Mapping[str, object],
    base: Session | None = None,
) -> Session:
    """A session from plain values: a whole new one, or `base` with `fields` changed.

    Every field is checked; an unknown field is refused so a misspelt one is not lost.
    """
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        raise BadRequest(f"Unknown field `{unknown[0]}`.")
    if base is None:
        for name in ("title", "start", "tz", "duration_minutes"):
            if name not in fields:
                raise BadRequest(f"`{name}` is required.")
    values: dict[str, Any] = {}
    if "title" in fields:
        values["title"] = _one_line(fields["title"], "title", MAX_TITLE)
    if "description" in fields:
        values["description"] = _long_text(fields["description"], "description", MAX_DESCRIPTION)
    if "agreement" in fields:
        values["agreement"] = _long_text(fields["agreement"], "agreement", MAX_AGREEMENT)
    if "tz" in fields:
        values["tz"] = check_zone(fields["tz"])
    if "start" in fields:
        values["start"] = parse_local(fields["start"], "start")
    if "duration_minutes" in fields:
        values["duration_minutes"] = _int(fields["duration_minutes"], "duration_minutes", DURATION)
    if "capacity" in fields:
        values["capacity"] = None if fields["capacity"] is None else _int(fields["capacity"], "capacity", CAPACITY)
    if "lobby_minutes" in fields:
        values["lobby_minutes"] = _int(fields["lobby_minutes"], "lobby_minutes", LOBBY)
    if "reminder_minutes" in fields:
        values["reminder_minutes"] = _int(fields["reminder_minutes"], "reminder_minutes", REMINDER)
    if "auto_admit" in fields:
        if not isinstance(fields["auto_admit"], bool):
            raise BadRequest("`auto_admit` must be true or false.")
        values["auto_admit"] = fields["auto_admit"]
    rrule_text = fields.get("rrule", base.rrule if base is not None else None)
    if base is None:
        session = Session(id=id, room=room, facilitators=facilitators, **values)
    else:
        session = replace(base, facilitators=facilitators, **values)
    if rrule_text is not None:
        canonical, kwargs = parse_rrule(rrule_text, session.start, session.zone)
        _check_occurs(kwargs, session.start)
        session = replace(session, rrule=canonical)
        if recurrence(canonical, session.start, session.tz).cut:
            raise BadRequest("The RRULE's COUNT runs past ten years after the start; use a smaller COUNT.")
    else:
        session = replace(session, rrule=None)
    session.span()  # refuses a rule whose UNTIL comes before its first occurrence
    return session


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


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones() - _NOT_ZONES)


def check_zone(tz: object) -> str:
    if not isinstance(tz, str) or tz not in _zones():
        raise BadRequest("`tz` must be an IANA time zone name, like Europe/London.")
    return tz


def parse_local(value: object, name: str) -> datetime:
    """A local wall-clock time `YYYY-MM-DDTHH:MM`, years 2000 to 2100."""
    if isinstance(value, str) and _LOCAL.fullmatch(value):
        try:
            moment = datetime.strptime(value, LOCAL_FORMAT)
        except ValueError:
            pass
        else:
            if 2000 <= moment.year <= 2100:
                return moment
    raise BadRequest(f"`{name}` must be a local time like 2026-12-03T19:00 (years 2000 to 2100).")


def parse_key(value: str) -> datetime:
    """An occurrence key, `2026-12-03T19:00:00Z`, as an aware UTC datetime, years 2000 to 2100."""
    if _KEY.fullmatch(value):
        try:
            key = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            pass
        else:
            if EARLIEST <= key < LATEST:
                return key
    raise BadRequest("An occurrence key is its original start in UTC, like 2026-12-03T19:00:00Z (years 2000 to 2100).")


def parse_instant(value: str, name: str) -> datetime:
    """An ISO 8601 time with `Z` or an offset, years 2000 to 2100, as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(value)
        moment = parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01 or 9999-12-31 moved to UTC
        moment = None
    if moment is None or not EARLIEST <= moment <= LATEST:
        raise BadRequest(
            f"`{name}` must be an ISO 8601 time with Z or an offset, like 2026-12-03T19:00:00Z (years 2000 to 2100)."
        )
    return moment


def check_window(start: datetime, end: datetime) -> None:
    """A window of occurrences: at most MAX_WINDOW long, within the years 2000 to 2100."""
    if end <= start:
        raise BadRequest("`to` must be after `from`.")
    if end - start > MAX_WINDOW:
        raise BadRequest("A window of occurrences is at most 366 days.")
    if start < EARLIEST or end > LATEST:
        raise BadRequest("Sessions are scheduled in the years 2000 to 2100.")


def check_reason(reason: object) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise BadRequest("`reason` must be a string.")
    return _long_text(reason, "reason", MAX_REASON) or None


def check_changeable(occurrence: Occurrence, now: datetime) -> None:
    """Facilitators may cancel or move an occurrence until it has ended (and, see
    `check_reach`, from HORIZON before it); members may give up a place until then."""
    if occurrence.end <= now:
        raise Conflict("This session has already taken place.")


def check_reach(occurrence: Occurrence, now: datetime) -> None:
    """Registration, cancellation and moves open HORIZON (366 days) before an occurrence starts.

    Nobody plans a group meeting further ahead, and every occurrence that can hold a
    registration or a change then lies within a bounded distance of now.
    """
    if occurrence.start - now >= HORIZON:
        raise Conflict("This session is more than 366 days away: registration and changes open 366 days before.")


def check_move(key: datetime, start: datetime, now: datetime) -> None:
    """A new start (UTC) is still to come, within HORIZON of now and of the original start.

    So a moved occurrence starts within HORIZON of its key, whatever moves it had: a window
    of starts needs only the keys within HORIZON of it (`keys_near`).
    """
    if start <= now:
        raise BadRequest("A session can only be moved to a time still to come.")
    if start - now >= HORIZON:
        raise BadRequest("A session can only be moved to a time within the next 366 days.")
    if abs(start - key) > HORIZON:
        raise BadRequest("A session can only be moved to within 366 days of its original time.")


def keys_near(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The keys of every occurrence that may start in [start, end): a move keeps an occurrence
    within HORIZON of its key (`check_move`)."""
    return start - HORIZON, end + HORIZON


def check_registrable(occurrence: Occurrence, now: datetime) -> None:
    """Registration is open for occurrences that are neither cancelled nor over, from HORIZON
    before they start."""
    if occurrence.cancelled:
        raise Conflict("This session was cancelled.")
    if occurrence.end <= now:
        raise Conflict("This session has already taken place.")
    check_reach(occurrence, now)


def can_manage(user: UserId, is_admin: bool, session: Session, is_room_staff: bool) -> bool:
    """A session's own facilitators (while still staff of its room) and admins change it."""
    return is_admin or (user in session.facilitators and is_room_staff)


def to_utc(local: datetime, zone: ZoneInfo) -> datetime:
    return local.replace(tzinfo=zone).astimezone(UTC)


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(value: object, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"`{name}` must be a string.")
    return clean_name(value, what=f"`{name}`", max_chars=limit)


def _long_text(value: object, name: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"`{name}` must be a string.")
    return clean_text(value, max_chars=limit, what=f"`{name}`") if value.strip() else ""


def _int(value: object, name: str, bounds: tuple[int, int]) -> int:
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"`{name}` must be a whole number from {lo} to {hi}.")
    return value
