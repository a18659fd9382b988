"""Rooms and messages: values in, events and replies out.

Every rule about who may join, what a message may hold and which message one may edit
lives here; the socket handler only decodes, calls and encodes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from rooms import policy
from rooms.errors import BadRequest, Forbidden, NotFound, TooLarge
from rooms.hours import check_hours
from rooms.model import CommunityId, EventKind, Member, MemberRole, NewEvent, Room, RoomId, RoomKind, Seq, User, UserId
from rooms.ports import Directory, TranscriptStore

# Control characters other than tab, newline and carriage return are refused in text; so are
# unpaired surrogates.
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_JOINERS = "\u200c\u200d"  # zero-width non-joiner and joiner: allowed in names (see clean_name)
_NO_JOINERS = str.maketrans("", "", _JOINERS)
MAX_NAME = 80
MAX_EMOJI = 16


def clean_text(text: str, *, max_chars: int, what: str = "Text") -> str:
    """A message text as stored: NFC-normalised, no control characters, within the limit."""
    if _FORBIDDEN_CHARS.search(text):
        raise BadRequest(f"{what} contains control characters.")
    text = unicodedata.normalize("NFC", text)
    if len(text) > max_chars:
        raise TooLarge(f"{what} is longer than {max_chars} characters.")
    if not text.strip():
        raise BadRequest(f"{what} is empty.")
    return text


def clean_name(name: str, *, what: str = "Name", max_chars: int = MAX_NAME) -> str:
    """A display name, room name or title: one line of 1 to `max_chars` characters, trimmed,
    with nothing in it that is invisible or changes how the text around it reads.

    A name is shown inline, next to other people's words: in presence lists, in "Maya is
    typing", in reminders. So beyond what message text refuses, a name refuses carriage
    return, line feed and tab, the line and paragraph separators, every C1 control, and
    every format character (Unicode category Cf): the bidi embeddings, overrides and isolates
    (U+202A-U+202E, U+2066-U+2069) and marks, zero-width spaces, the BOM, soft hyphens and
    tag characters (so the flags of England, Scotland and Wales, which are built of tags).
    An override left open in a name reverses whatever is shown after it on the line.

    The two zero-width joiners (U+200C, U+200D) are the exception: Persian and the Indic
    scripts need ZWNJ to spell words, and ZWJ joins emoji (a family, a profession) into one.
    They reorder nothing. Display names are not unique, so an invisible joiner adds no way to
    pass as someone else that typing the same name did not already give. A name must still
    hold something other than spaces and joiners.
    """
    name = clean_text(name, max_chars=max_chars, what=what).strip()
    for char in name:
        category = unicodedata.category(char)
        if char in "\r\n\t" or category in ("Zl", "Zp"):
            raise BadRequest(f"{what} must be one line.")
        if category == "Cc" or (category == "Cf" and char not in _JOINERS):
            raise BadRequest(f"{what} contains control or formatting characters.")
    if not name.translate(_NO_JOINERS).strip():
        raise BadRequest(f"{what} is empty.")
    return name


def check_client_id(client_id: str) -> str:
    if not _CLIENT_ID.fullmatch(client_id):
        raise BadRequest("client_id must be 1 to 64 letters, digits or . _ : -")
    return client_id


class RoomService:
    """Membership, permissions and the making of durable events."""

    def __init__(self, directory: Directory, store: TranscriptStore, *, max_text: int) -> None:
        self.directory = directory
        self.store = store
        self.max_text = max_text

    # Rooms and membership

    async def room(self, room_id: RoomId) -> Room:
        """The room named, or NotFound."""
        room = await self.directory.get_room(room_id)
        if room is None:
            raise NotFound("There is no such room.")
        return room

    async def managed_room(self, actor: User, room_id: RoomId, refusal: str) -> Room:
        """The room named, once `actor` runs it (its facilitators, admins); else Forbidden(`refusal`)."""
        room = await self.room(room_id)
        if not await self.facilitates(actor, room.id):
            raise Forbidden(refusal)
        return room

    async def entry(self, user: User, room: Room) -> bool:
        """Whether `user` may run sessions in `room` (its facilitators and admins), once they
        may join it at all (else Forbidden)."""
        membership = await self.directory.member_role(room.id, user.id)
        if not policy.can_join(user, room, membership):
            raise Forbidden("This group is for its members. Ask its facilitator to add you.")
        return policy.can_manage_members(user, membership)

    async def runs(self, room: RoomId, user_id: UserId | None) -> bool:
        """Whether `user_id` is one of the room's staff (its facilitators, admins): whom a
        session's facilitators may not mute or remove. An unknown user runs nothing."""
        if user_id is None:
            return False
        user = await self.directory.get_user(user_id)
        return user is not None and await self.facilitates(user, room)

    async def facilitates(self, user: User, room: RoomId) -> bool:
        """Whether `user` runs `room` now (its facilitators, admins): sees its private events."""
        return policy.can_manage_members(user, await self.directory.member_role(room, user.id))

    @staticmethod
    def require_room_creator(user: User) -> None:
        if not policy.can_create_room(user):
            raise Forbidden("Only facilitators and admins can open rooms.")

    async def create_room(self, user: User, name: str, kind: RoomKind, community: CommunityId) -> Room:
        self.require_room_creator(user)
        return await self.directory.create_room(clean_name(name, what="Room name"), kind, user, community)

    async def set_open_hours(self, actor: User, room_id: RoomId, hours: object) -> Room:
        """Set (or, with None, clear) a drop-in room's open hours: its facilitators and admins."""
        room = await self.managed_room(actor, room_id, "Only this room's facilitators can change its open hours.")
        if room.kind is not RoomKind.DROP_IN:
            raise BadRequest("Open hours are for drop-in rooms.")
        checked = check_hours(hours)
        await self.directory.set_open_hours(room.id, checked)
        return Room(room.id, room.name, room.kind, room.community, checked)

    async def check_co_facilitators(self, room: RoomId, users: Sequence[UserId]) -> None:
        """Co-facilitators of a session must be facilitators of its room."""
        for user in users:
            if await self.directory.member_role(room, user) is not MemberRole.FACILITATOR:
                raise BadRequest("Co-facilitators must be facilitators of this room.")

    async def add_member(self, actor: User, room_id: RoomId, user_id: UserId, role: MemberRole) -> bool:
        room = await self.managed_room(actor, room_id, "Only this room's facilitators can add members.")
        target = await self.directory.get_user(user_id)
        if target is None:
            raise NotFound("There is no such user.")
        if not policy.can_hold_room_role(target, role):
            raise Forbidden("Only staff can facilitate a room.")
        return await self.directory.add_member(room.id, target.id, role)

    # Durable events

    def new_message(
        self, user: Member, room: RoomId, text: str, client_id: str, reply_to: int | None, latest: Seq
    ) -> NewEvent:
        """A message ready for the store; `latest` is the room's newest seq this worker knows."""
        body: dict[str, Any] = {"text": clean_text(text, max_chars=self.max_text)}
        if reply_to is not None:
            if not 1 <= reply_to <= latest:
                raise BadRequest("reply_to names no message of this room.")
            body["reply_to"] = reply_to
        return NewEvent(room, EventKind.MESSAGE, user, body, check_client_id(client_id))

    async def new_edit(self, user: Member, room: RoomId, target: Seq, text: str, client_id: str | None) -> NewEvent:
        body = {"text": clean_text(text, max_chars=self.max_text)}
        await self._own_message(user, room, target, "edit")
        return NewEvent(room, EventKind.EDIT, user, body, _opt_client_id(client_id), target)

    async def new_delete(self, user: Member, room: RoomId, target: Seq, client_id: str | None) -> NewEvent:
        await self._own_message(user, room, target, "delete")
        return NewEvent(room, EventKind.DELETE, user, {}, _opt_client_id(client_id), target)

    def new_reaction(
        self, user: Member, room: RoomId, target: Seq, emoji: str, remove: bool, client_id: str | None
    ) -> NewEvent:
        emoji = clean_text(emoji, max_chars=MAX_EMOJI, what="Reaction")
        if any(ch.isspace() for ch in emoji):
            raise BadRequest("A reaction is one emoji or a short word, without spaces.")
        body = {"emoji": emoji, "remove": remove}
        return NewEvent(room, EventKind.REACTION, user, body, _opt_client_id(client_id), target)

    async def _own_message(self, user: Member, room: RoomId, target: Seq, verb: str) -> None:
        event = await self.store.read_event(room, target)
        if event is None or event.kind is not EventKind.MESSAGE or event.body.get("deleted"):
            raise NotFound("There is no such message.")
        if event.sender.get("id") != user.id:
            raise Forbidden(f"You can only {verb} your own messages.")


def _opt_client_id(client_id: str | None) -> str | None:
    return None if client_id is None else check_client_id(client_id)
