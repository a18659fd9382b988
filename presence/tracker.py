"""Presence per room: one entry per user however many devices, and a typing throttle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Entry:
    card: Mapping[str, str]
    conns: set[str] = field(default_factory=set)


class PresenceTracker:
    """Which users are in which room on this worker, counted by connection.

    `add` and `remove` return True exactly when the room's user list changes, which is when
    the others are told (`presence` event with `joined` or `left`).
    """

    def __init__(self, *, typing_interval: float = 2.0) -> None:
        self._rooms: dict[str, dict[str, _Entry]] = {}
        self._typing: dict[tuple[str, str], float] = {}
        self.typing_interval = typing_interval

    def add(self, room: str, user_id: str, conn_id: str, card: Mapping[str, str]) -> bool:
        users = self._rooms.setdefault(room, {})
        entry = users.get(user_id)
        if entry is None:
            users[user_id] = _Entry(card, {conn_id})
            return True
        entry.conns.add(conn_id)
        return False

    def remove(self, room: str, user_id: str, conn_id: str) -> bool:
        users = self._rooms.get(room)
        entry = users.get(user_id) if users else None
        if users is None or entry is None or conn_id not in entry.conns:
            return False
        entry.conns.discard(conn_id)
        if entry.conns:
            return False
        del users[user_id]
        self._typing.pop((room, user_id), None)
        if not users:
            del self._rooms[room]
        return True

    def members(self, room: str) -> list[dict[str, str]]:
        """The user cards of everyone present, in the order they arrived."""
        return [dict(e.card) for e in self._rooms.get(room, {}).values()]

    def typing(self, room: str, user_id: str, now: float) -> bool:
        """Whether a typing notice from `user_id` should go out now (at most one per interval)."""
        last = self._typing.get((room, user_id))
        if last is not None and now - last < self.typing_interval:
            return False
        self._typing[(room, user_id)] = now
        return True
