"""This worker's live connections, by connection id and by token."""

from __future__ import annotations

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

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, conn: C) -> None:
        self._by_id[conn.id] = conn

    def discard(self, conn: C) -> None:
        self._by_id.pop(conn.id, None)

    def all(self) -> list[C]:
        return list(self._by_id.values())

    def with_token(self, token_id: str) -> list[C]:
        return [c for c in self._by_id.values() if c.token_id == token_id]
