"""SqlSafety: the safety queue's cases and the communities' crisis resources."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from rooms.clock import now_us
from rooms.fields import is_id
from rooms.model import CommunityId, RoomId
from rooms.ports import SafetyStore
from rooms.safety.cases import Case, CaseKind, CaseStatus
from server.store.directory import Queries
from server.store.sql import guarded
from server.store.tables import cases, crisis_resources


def _case(row: Any) -> Case:
    return Case(
        id=row.id,
        kind=CaseKind(row.kind),
        community=CommunityId(row.community_id),
        room=RoomId(row.room_id),
        member=orjson.loads(row.member),
        opened_at=row.opened_at,
        category=row.category,
        seq=row.seq,
        raised_by=row.raised_by,
        note=row.note,
        snapshot=row.snapshot,
        status=CaseStatus(row.status),
        steps=tuple(orjson.loads(row.steps)),
    )


class SqlSafety(Queries):
    async def open_case(self, case: Case) -> None:
        values = {
            "id": case.id,
            "kind": case.kind.value,
            "community_id": case.community,
            "room_id": case.room,
            "category": case.category,
            "seq": case.seq,
            "member": orjson.dumps(dict(case.member)).decode(),
            "raised_by": case.raised_by,
            "note": case.note,
            "snapshot": case.snapshot,
            "status": case.status.value,
            "steps": orjson.dumps([dict(s) for s in case.steps]).decode(),
            "opened_at": case.opened_at,
        }
        await self._write(insert(cases).values(**values))

    async def case(self, case_id: str) -> Case | None:
        if not is_id(case_id):
            return None
        row = await self._one(select(cases).where(cases.c.id == case_id))
        return _case(row) if row else None

    async def cases(self, community: CommunityId, status: CaseStatus | None) -> list[Case]:
        query = select(cases).where(cases.c.community_id == community).order_by(cases.c.opened_at, cases.c.id)
        if status is not None:
            query = query.where(cases.c.status == status.value)
        return [_case(row) for row in await self._all(query.limit(1000))]

    async def update_case(self, case: Case, *, expected: CaseStatus) -> bool:
        steps = orjson.dumps([dict(s) for s in case.steps]).decode()
        statement = (
            update(cases)
            .where(cases.c.id == case.id, cases.c.status == expected.value)
            .values(status=case.status.value, steps=steps)
        )

        async def run() -> int:
            async with self.engines.writer.begin() as conn:
                return (await conn.execute(statement)).rowcount

        return await guarded(run) == 1

    async def resources(self, community: CommunityId, locale: str) -> list[dict[str, str]] | None:
        query = select(crisis_resources.c.resources).where(
            crisis_resources.c.community_id == community, crisis_resources.c.locale == locale
        )
        row = await self._one(query)
        return None if row is None else list(orjson.loads(row.resources))

    async def set_resources(self, community: CommunityId, locale: str, resources: list[dict[str, str]]) -> None:
        where = (crisis_resources.c.community_id == community, crisis_resources.c.locale == locale)
        value = orjson.dumps(resources).decode()
        try:
            await self._write(
                insert(crisis_resources).values(
                    community_id=community, locale=locale, resources=value, updated_at=now_us()
                )
            )
        except IntegrityError:
            await self._write(update(crisis_resources).where(*where).values(resources=value, updated_at=now_us()))


_: type[SafetyStore] = SqlSafety
