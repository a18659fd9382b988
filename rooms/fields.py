"""Reading a command's arguments (a websocket frame's map, an HTTP body): each reader takes
one field, checks its type and range, and returns it as the type it is, or raises
`BadRequest` naming the field. A missing field and `null` are the same. Text meant for
people is checked further by the domain (`rooms.service.clean_text`), which answers
`too_large` past its limit: its readers here take it as long as a frame can be."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rooms.errors import BadRequest

MAX_ID = 2**53 - 1  # the largest integer every JSON parser reads exactly
ID = 64  # characters of an id (room, user, client_id): past it, `bad_request`
_ID_SHAPE = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def is_id(value: str) -> bool:
    """Whether `value` has the shape of an id (a room's, a member's, a community's...):
    1 to 64 ASCII letters, digits, `_` or `-`. What has not names nothing, and the store is
    not asked (nor is its answer remembered)."""
    return _ID_SHAPE.fullmatch(value) is not None


def string(values: Mapping[str, Any], name: str, *, max_len: int = 200) -> str:
    value = values.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"`{name}` must be a string.")
    if len(value) > max_len:
        raise BadRequest(f"`{name}` is too long.")
    return value


def maybe_string(values: Mapping[str, Any], name: str, *, max_len: int = 200) -> str | None:
    return None if values.get(name) is None else string(values, name, max_len=max_len)


def integer(values: Mapping[str, Any], name: str, *, low: int, high: int = MAX_ID) -> int:
    value = values.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"`{name}` must be an integer.")
    if not low <= value <= high:
        raise BadRequest(f"`{name}` must be between {low} and {high}.")
    return value


def maybe_integer(values: Mapping[str, Any], name: str, *, low: int, high: int = MAX_ID) -> int | None:
    return None if values.get(name) is None else integer(values, name, low=low, high=high)


def flag(values: Mapping[str, Any], name: str, *, default: bool = False) -> bool:
    value = values.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"`{name}` must be true or false.")
    return value


def ids(values: Mapping[str, Any], name: str) -> list[str]:
    """A list of ids (member ids), each a string of at most ID characters."""
    value = values.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) and len(v) <= ID for v in value):
        raise BadRequest(f"`{name}` must be a list of member ids.")
    return value
