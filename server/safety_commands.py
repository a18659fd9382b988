"""The commands of the safety queue: `concern` and `report` (docs/protocol.md §9.3).

Both are silent: they open a case that only staff are alerted to; nobody else, and not the
person concerned, hears of it. Each is charged to its user's bucket of reports (a few, then
one a minute), so a member cannot flood the queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rooms import fields
from rooms.clock import now_us
from rooms.errors import BadRequest, RateLimited
from rooms.model import Member, MemberId, RoomId, Seq
from rooms.safety.cases import MAX_NOTE, Case, CaseKind, new_case_id
from rooms.service import clean_text
from server.commands import Handler, Reply, joined_room, signed_in
from server.connection import Connection
from server.hub import Hub
from server.safety import raise_case

REPORT_RATE = 1 / 60  # per second, after the burst
REPORT_BURST = 10


async def _charge(hub: Hub, conn: Connection) -> None:
    wait = await hub.quotas.take(f"{signed_in(conn).id}:reports", REPORT_RATE, REPORT_BURST)
    if wait:
        raise RateLimited("You have raised many concerns just now. Staff have them; please wait.", retry_after=wait)


async def op_concern(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    room = joined_room(conn, args)
    me: Member = conn.members[room]
    seq = fields.maybe_integer(args, "seq", low=1)
    named = fields.maybe_string(args, "member", max_len=fields.ID)
    if (seq is None) == (named is None):
        raise BadRequest("Name one of `seq` (a message) or `member`.")
    note = fields.maybe_string(args, "note", max_len=hub.limits.max_frame)
    clean_note = None if note is None else clean_text(note, max_chars=MAX_NOTE, what="The note")
    if seq is not None:
        card = dict((await hub.service.message(room, Seq(seq))).sender)
    else:
        assert named is not None
        card = (await hub.members.member_in(me.community, MemberId(named))).public()
    return await _raise(hub, conn, CaseKind.CONCERN, room, card, seq, clean_note)


async def op_report(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    room = joined_room(conn, args)
    seq = fields.integer(args, "seq", low=1)
    reason = clean_text(
        fields.string(args, "reason", max_len=hub.limits.max_frame), max_chars=MAX_NOTE, what="The reason"
    )
    message = await hub.service.message(room, Seq(seq))
    text = str(message.body.get("text", ""))
    return await _raise(hub, conn, CaseKind.REPORT, room, dict(message.sender), seq, reason, snapshot=text)


async def _raise(
    hub: Hub,
    conn: Connection,
    kind: CaseKind,
    room: RoomId,
    card: dict[str, str],
    seq: int | None,
    note: str | None,
    *,
    snapshot: str | None = None,
) -> Reply:
    """Charge the raiser, open the case and alert the staff who should know of it."""
    await _charge(hub, conn)
    me = conn.members[room]
    case = Case(
        id=new_case_id(),
        kind=kind,
        community=me.community,
        room=room,
        member=card,
        opened_at=now_us(),
        seq=seq,
        raised_by=me.id,
        note=note,
        snapshot=snapshot,
    )
    await raise_case(hub.cases, hub.notices, case)
    return {"case": case.id}


OPS: dict[str, Handler] = {"concern": op_concern, "report": op_report}
