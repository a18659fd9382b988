"""Presence per room on this worker: one entry per user however many devices; a typing throttle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from presence.ports import PresenceLease, PresenceStore


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

    def holds(self, room: str, user_id: str, conn_id: str) -> bool:
        entry = self._rooms.get(room, {}).get(user_id)
        return entry is not None and conn_id in entry.conns

    def leases(self) -> list[tuple[str, str, str, Mapping[str, str]]]:
        """Every (room, user, connection, card) held here: what a heartbeat renews."""
        return [
            (room, user, conn, entry.card)
            for room, users in self._rooms.items()
            for user, entry in users.items()
            for conn in entry.conns
        ]

    def typing(self, room: str, user_id: str, now: float) -> bool:
        """Whether a typing notice from `user_id` should go out now (at most one per interval)."""
        last = self._typing.get((room, user_id))
        if last is not None and now - last < self.typing_interval:
            return False
        self._typing[(room, user_id)] = now
        return True


class MemoryPresence:
    """The PresenceStore of a single process: its tracker is the whole truth, so leases never
    lapse (renewing one is a no-op) and there is nothing to sweep."""

    def __init__(self) -> None:
        self.tracker = PresenceTracker()

    async def add(self, room: str, user_id: str, conn_id: str, card: Mapping[str, str]) -> bool:
        return self.tracker.add(room, user_id, conn_id, card)

    async def renew(self, leases: Sequence[PresenceLease]) -> list[bool]:
        return [self.tracker.add(room, user, conn, card) for room, user, conn, card in leases]

    async def remove(self, room: str, user_id: str, conn_id: str) -> bool:
        return self.tracker.remove(room, user_id, conn_id)

    async def members(self, room: str) -> list[dict[str, str]]:
        return self.tracker.members(room)

    async def sweep(self, room: str) -> list[Mapping[str, str]]:
        return []


_: type[PresenceStore] = MemoryPresence
