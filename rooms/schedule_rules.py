"""The rules of an occurrence: when it takes registrations, cancellations and moves.

Pure: values in, values or `rooms.errors` out; no clock, no I/O.
"""

from __future__ import annotations

from datetime import datetime

from rooms.errors import BadRequest, Conflict
from rooms.schedule import HORIZON, Occurrence


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
