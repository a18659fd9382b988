"""This worker's live connections, by connection id, by user and by token."""

from __future__ import annotations

from collections import defaultdict
from typing import Generic, Protocol, TypeVar


class Registered(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def user_id(self) -> str: ...

    @property
    def token_id(self) -> str: ...


C = TypeVar("C", bound=Registered)


class ConnectionRegistry(Generic[C]):
    """Connections that have authenticated on this worker."""

    def __init__(self) -> None:
        self._by_id: dict[str, C] = {}
        self._by_user: defaultdict[str, set[str]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, conn: C) -> None:
        self._by_id[conn.id] = conn
        self._by_user[conn.user_id].add(conn.id)

    def discard(self, conn: C) -> None:
        if self._by_id.pop(conn.id, None) is None:
            return
        ids = self._by_user[conn.user_id]
        ids.discard(conn.id)
        if not ids:
            del self._by_user[conn.user_id]

    def all(self) -> list[C]:
        return list(self._by_id.values())

    def of_user(self, user_id: str) -> list[C]:
        return [self._by_id[i] for i in self._by_user.get(user_id, ())]

    def with_token(self, token_id: str) -> list[C]:
        return [c for c in self._by_id.values() if c.token_id == token_id]
