"""Time as Hearth writes it: on the wire, ISO 8601 UTC with milliseconds and a `Z`
(`2026-11-21T18:02:11.481Z`); in the store, whole microseconds since the epoch; in the
session clocks, milliseconds. Every conversion between them is here."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def now_us() -> int:
    return time.time_ns() // 1000


def iso_ts(ts: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a `Z`, as the protocol shows."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"  # "…+00:00" → "…Z"


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as the protocol's time."""
    return iso_ts(datetime.fromtimestamp(ms / 1000, UTC))


def parse_ts(text: str) -> int:
    """The protocol's time (`…Z`) as epoch milliseconds."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def to_us(moment: datetime) -> int:
    """An aware datetime as whole microseconds since the epoch (exactly: no float on the way)."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)
