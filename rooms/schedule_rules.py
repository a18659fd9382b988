"""The rules of an occurrence: when it takes registrations and changes, who gets a place and
who waits, who leaves the waitlist when a place frees, and what the calendar makes happen.

Places for an occurrence are served first come, first served: a newcomer gets a place
while there is one and nobody is waiting, and joins the end of the waitlist otherwise; the
first on the waitlist takes each place that frees, and all of them take the places a larger
capacity (or none) makes. The `places` these rules read are one occurrence's, in the order
they were asked for (`rooms.ports.SessionTx.places`).

Pure: values in, values or `rooms.errors` out; no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from rooms.errors import BadRequest, Conflict
from rooms.model import UserId
from rooms.schedule import HORIZON, Change, Occurrence, Session, to_utc

Status = Literal["registered", "waitlisted"]
REGISTERED: Status = "registered"
WAITLISTED: Status = "waitlisted"


@dataclass(frozen=True, slots=True)
class Place:
    """A place held for one occurrence: registered, or on its waitlist."""

    user: UserId
    status: Status


@dataclass(frozen=True, slots=True)
class Registration:
    """Where one user stands for one occurrence; `position` counts from 1 on the waitlist."""

    status: Status
    position: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"status": self.status}
        if self.position is not None:
            wire["position"] = self.position
        return wire


@dataclass(frozen=True, slots=True)
class Attendance:
    """Counts for one occurrence, and where the asking user stands."""

    registered: int = 0
    waitlisted: int = 0
    mine: Status | None = None


# Places


def standing(places: Sequence[Place], user: UserId) -> Registration | None:
    """Where `user` stands among `places`, or None when they hold none."""
    waiting = 0
    for place in places:
        if place.status == WAITLISTED:
            waiting += 1
        if place.user == user:
            return Registration(REGISTERED) if place.status == REGISTERED else Registration(WAITLISTED, waiting)
    return None


def newcomer(places: Sequence[Place], capacity: int | None) -> Status:
    """A new registration's place: registered while a place is free and nobody waits for one
    (a free place with people waiting is theirs, not the newcomer's), else the waitlist."""
    taken = sum(place.status == REGISTERED for place in places)
    waiting = len(places) - taken
    full = capacity is not None and (taken >= capacity or waiting > 0)
    return WAITLISTED if full else REGISTERED


def promoted(places: Sequence[Place], capacity: int | None) -> list[UserId]:
    """Who leaves the waitlist for a place: the first waiting, one for each free place, or
    everyone waiting when there is no capacity."""
    waiting = [place.user for place in places if place.status == WAITLISTED]
    if capacity is None:
        return waiting
    free = capacity - sum(place.status == REGISTERED for place in places)
    return waiting[: max(free, 0)]


def frees_places(old: Session, new: Session) -> bool:
    """Whether a change of the session makes room for its waitlists: a capacity removed or raised."""
    return new.capacity is None or (old.capacity is not None and new.capacity > old.capacity)


# Reach


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


def check_registrable(occurrence: Occurrence, now: datetime) -> None:
    """Registration is open for occurrences that are neither cancelled nor over, from HORIZON
    before they start."""
    if occurrence.cancelled:
        raise Conflict("This session was cancelled.")
    if occurrence.end <= now:
        raise Conflict("This session has already taken place.")
    check_reach(occurrence, now)


def check_move(key: datetime, start: datetime, now: datetime) -> None:
    """A new start (UTC) is still to come, within HORIZON of now and of the original start.

    So a moved occurrence starts within HORIZON of its key, whatever moves it had: a window
    of starts needs only the keys within HORIZON of it (`rooms.schedule.keys_near`).
    """
    if start <= now:
        raise BadRequest("A session can only be moved to a time still to come.")
    if start - now >= HORIZON:
        raise BadRequest("A session can only be moved to a time within the next 366 days.")
    if abs(start - key) > HORIZON:
        raise BadRequest("A session can only be moved to within 366 days of its original time.")


def changed(
    session: Session,
    occurrence: Occurrence,
    current: Change | None,
    now: datetime,
    *,
    cancel: bool = False,
    moved_to: datetime | None = None,
    reason: str | None = None,
) -> Change | None:
    """The exception `occurrence` gets when cancelled, or moved to `moved_to` (naive local
    time); None when nothing changes (cancelling it again). A move keeps a cancellation's
    reason unless given another, and a cancellation keeps a move."""
    check_changeable(occurrence, now)
    check_reach(occurrence, now)
    if cancel and occurrence.cancelled:
        return None
    if moved_to is not None and occurrence.cancelled:
        raise Conflict("This session was cancelled; it cannot be moved.")
    if moved_to is not None:
        check_move(occurrence.key, to_utc(moved_to, session.zone), now)
    return Change(
        occurrence.key,
        cancelled=cancel,
        moved_to=moved_to if moved_to is not None else (current.moved_to if current else None),
        reason=reason if reason is not None else (current.reason if current else None),
    )


# The calendar


@dataclass(frozen=True, slots=True)
class Due:
    """What the calendar makes happen for one occurrence at one moment."""

    remind: bool = False  # remind those registered
    open: bool = False  # open the lobby
    end: bool = False  # end the session, if it is still open


def due(occurrence: Occurrence, now: datetime, *, end_grace: timedelta) -> Due:
    """Nothing for a cancelled occurrence. Reminders from `reminder_minutes` before the start
    until the start (none at 0); the lobby's opening from `lobby_minutes` before the start
    until the end; and the end once the occurrence has been over for `end_grace`."""
    if occurrence.cancelled:
        return Due()
    remind_at = occurrence.start - timedelta(minutes=occurrence.reminder_minutes)
    opens_at = occurrence.start - timedelta(minutes=occurrence.lobby_minutes)
    opens = opens_at <= now < occurrence.end
    return Due(
        remind=bool(occurrence.reminder_minutes) and remind_at <= now < occurrence.start,
        open=opens,
        end=not opens and occurrence.end + end_grace < now,
    )
