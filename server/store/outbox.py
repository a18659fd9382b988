"""The notification outbox: one row per notice that a person should get by e-mail or SMS.

Hearth writes the rows; an external sender reads those with `sent_at` NULL, sends them,
and sets `sent_at`. The unique (kind, user, session, occurrence) key makes every notice
once-only however many workers try to write it. Rows carry ids and titles, never what
was said in a room.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from rooms.clock import now_us
from rooms.model import UserId
from rooms.ports import Outbox
from server.store.engine import Engines
from server.store.sql import guarded
from server.store.tables import notification_outbox


class SqlOutbox:
    def __init__(self, engines: Engines) -> None:
        self.engines = engines

    async def enqueue(
        self, kind: str, users: Sequence[UserId], session: str, occurrence: str, payload: Mapping[str, Any]
    ) -> list[UserId]:
        """Add the notice for each user who does not have it yet; returns those users."""
        if not users:
            return []
        table = notification_outbox

        async def run() -> list[UserId]:
            async with self.engines.writer.begin() as conn:
                existing = await conn.execute(
                    select(table.c.user_id).where(
                        table.c.kind == kind,
                        table.c.session_id == session,
                        table.c.occurrence == occurrence,
                        table.c.user_id.in_(list(users)),
                    )
                )
                have = {row.user_id for row in existing}
                fresh = [u for u in users if u not in have]
                if fresh:
                    body = orjson.dumps(dict(payload)).decode()
                    rows = [
                        {"kind": kind, "user_id": u, "session_id": session, "occurrence": occurrence,
                         "payload": body, "created_at": now_us()}
                        for u in fresh
                    ]  # fmt: skip
                    await conn.execute(insert(table), rows)
                return fresh

        try:
            return await guarded(run)
        except IntegrityError:  # another worker wrote them first
            return []

    async def pending(self, limit: int = 100) -> list[dict[str, Any]]:
        """Notices not sent yet, oldest first (what an external sender polls)."""

        async def run() -> list[dict[str, Any]]:
            async with self.engines.reader.connect() as conn:
                query = select(notification_outbox).where(notification_outbox.c.sent_at.is_(None))
                rows = await conn.execute(query.order_by(notification_outbox.c.id).limit(limit))
                return [dict(row._mapping) for row in rows]

        return await guarded(run)


_: type[Outbox] = SqlOutbox
