"""The presence port: heartbeat-with-TTL semantics, shared by every worker of a deployment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

Card = Mapping[str, str]  # what others see of a user: {"id", "name", "role"}
PresenceLease = tuple[str, str, str, Card]  # (room, user, connection, card)


class PresenceStore(Protocol):
    """Who is in which room. Implementations: MemoryPresence (one process), RedisPresence.

    Each connection holds a lease that its worker refreshes; a worker that dies stops
    refreshing, and its connections drop out once their leases expire (no goodbye needed).
    A user appears once per room however many connections, devices or workers they use.
    """

    async def add(self, room: str, user_id: str, conn_id: str, card: Card) -> bool:
        """Lease `conn_id` in `room`, or renew its lease (a heartbeat); True when the user was
        not present before (a new arrival, or a lease that had lapsed)."""

    async def renew(self, leases: Sequence[PresenceLease]) -> list[bool]:
        """`add` for many (room, user, connection, card) leases at once, in one round trip:
        for each, True when its user was not present (the lease had lapsed)."""

    async def remove(self, room: str, user_id: str, conn_id: str) -> bool:
        """Drop `conn_id`'s lease; True when it was the user's last one in the room."""

    async def members(self, room: str) -> list[dict[str, str]]:
        """Cards of the users with a live lease, one per user."""

    async def sweep(self, room: str) -> list[Card]:
        """Remove users whose every lease expired; each is returned to exactly one caller."""
