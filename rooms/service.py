"""Rooms and messages: values in, events and replies out.

What a message may hold and which message one may edit are decided here, and a person's
standing in a room is found here for the permission matrix (`rooms.permissions`); the
socket handler only decodes, calls and encodes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from rooms.errors import BadRequest, Banned, Forbidden, NotFound, TooLarge
from rooms.hours import check_hours
from rooms.model import (
    CommunityId,
    Event,
    EventKind,
    Member,
    MemberRole,
    NewEvent,
    Room,
    RoomId,
    RoomKind,
    Seq,
    User,
    UserId,
)
from rooms.permissions import (
    NOBODY,
    Op,
    Standing,
    allowed,
    in_community,
    in_room,
    require,
    require_live_co_facilitator,
    require_room_role,
)
from rooms.ports import Communities, Directory, TranscriptStore

# Control characters other than tab, newline and carriage return are refused in text; so are
# unpaired surrogates.
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
_JOINERS = "\u200c\u200d"  # zero-width non-joiner and joiner: allowed in names (see clean_name)
_NO_JOINERS = str.maketrans("", "", _JOINERS)
MAX_NAME = 80
MAX_EMOJI = 16
MAX_REASON = 500
MAX_SLOW_MODE = 3600


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


async def room_standing(directory: Directory, communities: Communities, user: User, room: Room) -> Standing:
    """What `user` is in `room`: their role, whether they belong in it, whether they are one
    of its facilitators. An account banned from the room's community is none of these: a
    banned facilitator runs nothing there, a banned member sees nothing of it."""
    if await communities.banned(room.community, user.id):
        return in_room(user.role, member=False, kind=room.kind, membership=None)
    membership = await directory.member_role(room.id, user.id)
    member = membership is not None or await communities.member_of(room.community, user.id) is not None
    return in_room(user.role, member=member, kind=room.kind, membership=membership)


class RoomService:
    """Rooms, membership, a person's standing in a room, and the making of durable events.
    Who may do what is the permission matrix's to say (`rooms.permissions`)."""

    def __init__(
        self, directory: Directory, store: TranscriptStore, communities: Communities, *, max_text: int
    ) -> None:
        self.directory = directory
        self.store = store
        self.communities = communities
        self.max_text = max_text

    # Rooms and membership

    async def room(self, room_id: RoomId) -> Room:
        """The room named, or NotFound."""
        room = await self.directory.get_room(room_id)
        if room is None:
            raise NotFound("There is no such room.")
        return room

    async def standing(self, user: User, room: Room) -> Standing:
        return await room_standing(self.directory, self.communities, user, room)

    async def standing_in(self, user: User, room_id: RoomId) -> Standing:
        return await self.standing(user, await self.room(room_id))

    async def target(self, room_id: RoomId, account: UserId | None) -> Standing:
        """The standing in the room of someone acted on (NOBODY for an account unknown here)."""
        user = None if account is None else await self.directory.get_user(account)
        return NOBODY if user is None else await self.standing_in(user, room_id)

    async def managed_room(self, actor: User, room_id: RoomId, op: Op) -> Room:
        """The room named, once the matrix lets `actor` do `op` there; else Forbidden."""
        room = await self.room(room_id)
        require(op, await self.standing(actor, room))
        return room

    async def entry(self, user: User, room: Room, *, on_duty: bool = False) -> Standing:
        """`user`'s standing in `room`, once they may join it (else Banned or Forbidden), and
        be shown on duty there if they ask to."""
        if await self.communities.banned(room.community, user.id):
            raise Banned("This account is banned from this community.")
        standing = await self.standing(user, room)
        require(Op.ROOM_ENTER, standing)
        if on_duty:
            require(Op.ON_DUTY, standing)
        return standing

    @staticmethod
    def require_room_creator(user: User) -> None:
        """Whether `user`'s role creates rooms at all, before anything is read (their standing
        in the room's community is asked next: `CommunityService.home_for_room`)."""
        require(Op.ROOM_CREATE, in_community(user.role, member=True))

    async def create_room(self, user: User, name: str, kind: RoomKind, community: CommunityId) -> Room:
        self.require_room_creator(user)
        return await self.directory.create_room(clean_name(name, what="Room name"), kind, user, community)

    async def set_open_hours(self, actor: User, room_id: RoomId, hours: object) -> Room:
        """Set (or, with None, clear) a drop-in room's open hours."""
        room = await self.managed_room(actor, room_id, Op.ROOM_HOURS)
        if room.kind is not RoomKind.DROP_IN:
            raise BadRequest("Open hours are for drop-in rooms.")
        checked = check_hours(hours)
        await self.directory.set_open_hours(room.id, checked)
        return Room(room.id, room.name, room.kind, room.community, checked)

    async def moderate(
        self, actor: User, room_id: RoomId, *, slow_mode: object = None, suspended: object = None, notice: object = None
    ) -> Room:
        """Set a room's slow mode (0–3600 seconds between a member's messages; 0: off) and
        whether it is suspended (with a notice, 1–500 characters, shown to everyone)."""
        room = await self.managed_room(actor, room_id, Op.ROOM_MODERATE)
        slow = room.slow_mode
        if slow_mode is not None:
            if not isinstance(slow_mode, int) or isinstance(slow_mode, bool) or not 0 <= slow_mode <= MAX_SLOW_MODE:
                raise BadRequest(f"`slow_mode` must be a whole number of seconds from 0 to {MAX_SLOW_MODE}.")
            slow = slow_mode
        held = room.suspended
        if suspended is not None:
            if not isinstance(suspended, bool):
                raise BadRequest("`suspended` must be true or false.")
            if suspended:
                if not isinstance(notice, str):
                    raise BadRequest("Say why in a `notice`: everyone in the room will read it.")
                held = clean_text(notice, max_chars=MAX_REASON, what="The notice")
            else:
                held = None
        elif notice is not None:
            raise BadRequest("A `notice` goes with `suspended`.")
        await self.directory.set_moderation(room.id, slow, held)
        return replace(room, slow_mode=slow, suspended=held)

    @staticmethod
    def may_speak(room: Room, standing: Standing) -> int:
        """Whether a member may send a message in `room` now: Forbidden while it is suspended;
        the seconds of its slow mode that hold for them (0: none). Staff are exempt."""
        if allowed(Op.ROOM_MODERATE, standing):
            return 0
        if room.suspended is not None:
            raise Forbidden(f"This room is paused by its staff: {room.suspended}")
        return room.slow_mode

    async def check_co_facilitators(self, room: RoomId, users: Sequence[UserId]) -> None:
        """Co-facilitators of a live session opened by hand must be facilitators of its room."""
        for user in users:
            require_live_co_facilitator(await self.directory.member_role(room, user))

    async def add_member(self, actor: User, room_id: RoomId, user_id: UserId, role: MemberRole) -> bool:
        room = await self.managed_room(actor, room_id, Op.ROOM_MEMBERS)
        target = await self.directory.get_user(user_id)
        if target is None:
            raise NotFound("There is no such user.")
        require_room_role(target.role, role)
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

    async def new_redaction(
        self, actor: Member, standing: Standing, room: RoomId, target: Seq, reason: str
    ) -> NewEvent:
        """Staff take a message's text out of the store for good: a deletion that says it was
        a redaction. The reason goes to the audit log, not to the room."""
        require(Op.REDACT, standing)
        clean_text(reason, max_chars=MAX_REASON, what="The reason")
        await self.message(room, target)
        return NewEvent(room, EventKind.DELETE, actor, {"redacted": True}, None, target)

    def new_reaction(
        self, user: Member, room: RoomId, target: Seq, emoji: str, remove: bool, client_id: str | None
    ) -> NewEvent:
        emoji = clean_text(emoji, max_chars=MAX_EMOJI, what="Reaction")
        if any(ch.isspace() for ch in emoji):
            raise BadRequest("A reaction is one emoji or a short word, without spaces.")
        body = {"emoji": emoji, "remove": remove}
        return NewEvent(room, EventKind.REACTION, user, body, _opt_client_id(client_id), target)

    async def message(self, room: RoomId, seq: Seq) -> Event:
        """The message `seq` of `room` as it stands now: NotFound when there is none (not a
        message, or deleted)."""
        event = await self.store.read_event(room, seq)
        if event is None or event.kind is not EventKind.MESSAGE or event.body.get("deleted"):
            raise NotFound("There is no such message.")
        return event

    async def _own_message(self, user: Member, room: RoomId, target: Seq, verb: str) -> None:
        event = await self.message(room, target)
        if event.sender.get("id") != user.id:
            raise Forbidden(f"You can only {verb} your own messages.")


def _opt_client_id(client_id: str | None) -> str | None:
    return None if client_id is None else check_client_id(client_id)
