"""Scheduled sessions of group rooms: the values, the occurrences they expand to, and the
checks of every field a client gives.

A session holds its start as a LOCAL wall-clock time in a named IANA zone, plus an optional
RFC 5545 RRULE (`rooms.recurrence`). Expansion runs the rule on the local time and only then
places each start in the zone, so a weekly 19:00 Europe/London session stays at 19:00 local
across daylight-saving changes (18:00Z in summer, 19:00Z in winter). A local time that does
not exist (the hour skipped in spring) is read with the offset before the gap, and one that
happens twice (the hour repeated in autumn) is the first of the two, as RFC 5545 says.

An occurrence is named forever by its key: its ORIGINAL start in UTC. Cancelling one keeps
it listed with `cancelled=True`; moving one gives it a new start under the same key, within
HORIZON of it (`rooms.schedule_rules.check_move`), so a window of starts needs only the
changes whose keys lie within HORIZON of it (`keys_near`).

Every date a client gives lies in the years 2000 to 2100. What may be done with a session
and its occurrences, and by whom, is `rooms.schedule_rules` and `rooms.schedule_service`.

Pure: values in, values or `rooms.errors` out; no clock, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, NewType
from zoneinfo import ZoneInfo, available_timezones

from rooms.errors import BadRequest
from rooms.model import RoomId, UserId
from rooms.recurrence import Recurrence, canonical_rule, recurrence
from rooms.service import clean_name, clean_text

SessionId = NewType("SessionId", str)

# Limits
MAX_TITLE = 120
MAX_DESCRIPTION = 4000
MAX_AGREEMENT = 2000
MAX_REASON = 500
DURATION = (5, 600)
CAPACITY = (1, 1000)
LOBBY = (0, 60)
REMINDER = (0, 1440)
MAX_WINDOW = timedelta(days=366)  # the longest span any one expansion covers

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
    rrule = None if rrule_text is None else canonical_rule(rrule_text, session.start, session.tz)
    session = replace(session, rrule=rrule)
    session.span()  # refuses a rule whose UNTIL comes before its first occurrence
    return session


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


def keys_near(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The keys of every occurrence that may start in [start, end): a move keeps an occurrence
    within HORIZON of its key (`rooms.schedule_rules.check_move`)."""
    return start - HORIZON, end + HORIZON


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
