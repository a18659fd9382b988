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
from rooms.errors import BadRequest, NotFound, RateLimited
from rooms.model import EventKind, Member, MemberId, RoomId, Seq
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


async def _message(hub: Hub, room: RoomId, seq: int) -> tuple[dict[str, str], str]:
    """The card of a message's author, and its text as it stands now; NotFound when `seq` is
    not a message of the room (or was deleted)."""
    event = await hub.store.read_event(room, Seq(seq))
    if event is None or event.kind is not EventKind.MESSAGE or event.body.get("deleted"):
        raise NotFound("There is no such message.")
    return dict(event.sender), str(event.body.get("text", ""))


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
        card, _ = await _message(hub, room, seq)
    else:
        assert named is not None
        card = (await hub.members.member_in(me.community, MemberId(named))).public()
    await _charge(hub, conn)
    case = Case(
        id=new_case_id(),
        kind=CaseKind.CONCERN,
        community=me.community,
        room=room,
        member=card,
        opened_at=now_us(),
        seq=seq,
        raised_by=me.id,
        note=clean_note,
    )
    await raise_case(hub.cases, hub.notices, case)
    return {"case": case.id}


async def op_report(hub: Hub, conn: Connection, args: Mapping[str, Any]) -> Reply:
    room = joined_room(conn, args)
    me: Member = conn.members[room]
    seq = fields.integer(args, "seq", low=1)
    reason = clean_text(
        fields.string(args, "reason", max_len=hub.limits.max_frame), max_chars=MAX_NOTE, what="The reason"
    )
    card, text = await _message(hub, room, seq)
    await _charge(hub, conn)
    case = Case(
        id=new_case_id(),
        kind=CaseKind.REPORT,
        community=me.community,
        room=room,
        member=card,
        opened_at=now_us(),
        seq=seq,
        raised_by=me.id,
        note=reason,
        snapshot=text,
    )
    await raise_case(hub.cases, hub.notices, case)
    return {"case": case.id}


OPS: dict[str, Handler] = {"concern": op_concern, "report": op_report}
