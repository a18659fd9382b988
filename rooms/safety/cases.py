"""The safety queue: cases opened by the detector, by a silent concern or by a report, and
what staff do with them (docs/protocol.md §9.3).

A case names the member it is about by their card as it was, the room and the message
(`seq`), never the account. A report keeps a snapshot of the text as it was reported, so an
edit or a deletion afterwards does not take away what staff need to read. Staff of the
case's community acknowledge it (someone is on it) and resolve it with a note; who and when
is kept, and each step is in the audit log.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from rooms.clock import from_us, iso_ts, now_us
from rooms.communities import CommunityService
from rooms.errors import BadRequest, Conflict, NotFound
from rooms.model import CommunityId, RoomId, User
from rooms.permissions import Op, require
from rooms.ports import AuditLog, SafetyStore
from rooms.service import clean_text

MAX_NOTE = 2000
MAX_RESOURCES = 20
MAX_RESOURCE_TEXT = 1000
MAX_RESOURCE_FIELD = 200

# What an author in crisis is shown when their community has set nothing: calm, short, and
# true everywhere.
DEFAULT_RESOURCES: list[dict[str, str]] = [
    {
        "title": "If you are in danger now",
        "text": "Please call your local emergency number (112 in Europe, 911 in North America, "
        "999 in the UK) or go to the nearest emergency department.",
    },
    {
        "title": "You do not have to go through this alone",
        "text": "A facilitator of this group has been told and will reach out. If you can, tell "
        "someone near you how you feel.",
    },
]


class CaseKind(StrEnum):
    CRISIS = "crisis"  # the detector matched a message
    CONCERN = "concern"  # someone is worried about a message or a member, silently
    REPORT = "report"  # someone reports a message, with a snapshot of it


class CaseStatus(StrEnum):
    OPEN = "open"
    ACKED = "acked"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    kind: CaseKind
    community: CommunityId
    room: RoomId
    member: Mapping[str, str]  # the card of whom it is about, as it was
    opened_at: int  # microseconds since the epoch
    category: str | None = None  # crisis: the detector's category
    seq: int | None = None  # the message, when it is about one
    raised_by: str | None = None  # concern, report: the member id who raised it (staff see it)
    note: str | None = None  # a concern's note, a report's reason
    snapshot: str | None = None  # a report: the text as it was reported
    status: CaseStatus = CaseStatus.OPEN
    steps: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)  # {"action", "by", "at", "note"?}

    def public(self) -> dict[str, Any]:
        """The case as staff see it (an `alert` event, the queue)."""
        shown: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "category": self.category,
            "community": self.community,
            "room": self.room,
            "seq": self.seq,
            "member": dict(self.member),
            "status": self.status.value,
            "opened_at": iso_ts(from_us(self.opened_at)),
        }
        if self.raised_by is not None:
            shown["raised_by"] = self.raised_by
        if self.note is not None:
            shown["note"] = self.note
        if self.snapshot is not None:
            shown["snapshot"] = self.snapshot
        if self.steps:
            shown["steps"] = [dict(step) for step in self.steps]
        return shown


def new_case_id() -> str:
    return f"k_{secrets.token_hex(6)}"


def check_resources(value: object) -> list[dict[str, str]]:
    """A list of crisis resources: each `{"title", "text", "phone"?, "url"?}`."""
    if not isinstance(value, list) or not value or len(value) > MAX_RESOURCES:
        raise BadRequest(f"`resources` must be a list of 1 to {MAX_RESOURCES} resources.")
    checked: list[dict[str, str]] = []
    for item in value:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("title"), str)
            or not isinstance(item.get("text"), str)
        ):
            raise BadRequest("Each resource has a `title` and a `text`.")
        if set(item) - {"title", "text", "phone", "url"}:
            raise BadRequest("A resource has a `title`, a `text`, and optionally a `phone` and a `url`.")
        resource = {
            "title": clean_text(item["title"], max_chars=MAX_RESOURCE_FIELD, what="A title"),
            "text": clean_text(item["text"], max_chars=MAX_RESOURCE_TEXT, what="A text"),
        }
        for optional in ("phone", "url"):
            if optional in item:
                if not isinstance(item[optional], str):
                    raise BadRequest(f"`{optional}` must be a string.")
                resource[optional] = clean_text(item[optional], max_chars=MAX_RESOURCE_FIELD, what=optional)
        if "url" in resource and not resource["url"].startswith(("https://", "http://", "tel:")):
            raise BadRequest("A resource's `url` starts with https://, http:// or tel:.")
        checked.append(resource)
    return checked


class CaseService:
    """Opening cases and handling them, on the ports given; who may is the matrix's
    (`Op.CASES`, `Op.CRISIS_RESOURCES`: staff of the case's community)."""

    def __init__(self, store: SafetyStore, audit: AuditLog, members: CommunityService) -> None:
        self.store = store
        self.audit = audit
        self.members = members

    async def open(self, case: Case) -> Case:
        await self.store.open_case(case)
        return case

    async def queue(self, actor: User, community: CommunityId, status: CaseStatus | None) -> list[Case]:
        """The community's cases (with `status`: those only), oldest first."""
        await self.members.community(community)
        require(Op.CASES, await self.members.standing(actor, community))
        return await self.store.cases(community, status)

    async def act(self, actor: User, case_id: str, action: str, note: str | None) -> Case:
        """Acknowledge or resolve a case, as staff of its community."""
        case = await self.store.case(case_id)
        if case is None:
            raise NotFound("There is no such case.")
        require(Op.CASES, await self.members.standing(actor, case.community))
        if action not in ("ack", "resolve"):
            raise BadRequest("`action` must be ack or resolve.")
        clean_note = None if note is None else clean_text(note, max_chars=MAX_NOTE, what="The note")
        if case.status is CaseStatus.RESOLVED:
            raise Conflict("This case is resolved already.")
        if action == "ack" and case.status is CaseStatus.ACKED:
            raise Conflict("This case is acknowledged already.")
        card = await self.members.communities.member_of(case.community, actor.id)
        step: dict[str, Any] = {
            "action": action,
            "by": card.public() if card else None,
            "at": iso_ts(from_us(now_us())),
        }
        if clean_note is not None:
            step["note"] = clean_note
        status = CaseStatus.ACKED if action == "ack" else CaseStatus.RESOLVED
        changed = replace(case, status=status, steps=(*case.steps, step))
        if not await self.store.update_case(changed, expected=case.status):
            raise Conflict("This case was changed meanwhile. Please look again.")
        await self.audit.record(
            actor.id, f"case.{action}", community=case.community, room=case.room, target=case.id, reason=clean_note
        )
        return changed

    async def resources(self, community: CommunityId, locale: str) -> list[dict[str, str]]:
        """The community's crisis resources for `locale`, or the built-in default."""
        found = await self.store.resources(community, locale)
        return [dict(r) for r in (found or DEFAULT_RESOURCES)]

    async def set_resources(
        self, actor: User, community: CommunityId, locale: str, value: object
    ) -> list[dict[str, str]]:
        await self.members.community(community)
        require(Op.CRISIS_RESOURCES, await self.members.standing(actor, community))
        if not isinstance(locale, str) or not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?", locale):
            raise BadRequest("`locale` is a language tag such as en or en-GB.")
        checked = check_resources(value)
        await self.store.set_resources(community, locale, checked)
        await self.audit.record(actor.id, "resources.crisis", community=community, reason=locale)
        return checked
