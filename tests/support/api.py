"""The HTTP API as a client calls it: `Api` signs people up, signs staff in, makes rooms
and adds members; `Account` is who it signed in, `auth` the header that says so.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from rooms.model import Role
from tests.support.deadlines import TIMEOUT

if TYPE_CHECKING:
    from tests.support.servers import Running

PASSWORD = "correct horse"

_names = itertools.count()


def new_username(prefix: str) -> str:
    """A username no other test in the run has taken."""
    return f"{prefix}{next(_names)}{secrets.token_hex(2)}"


@dataclass
class Account:
    id: str
    username: str
    name: str
    role: str
    token: str

    @classmethod
    def signed_in(cls, username: str, answer: dict[str, Any]) -> Account:
        """The account a signup or login answer names, with its token."""
        user = answer["user"]
        return cls(user["id"], username, user["name"], user["role"], answer["token"])


def auth(account: Account) -> dict[str, str]:
    """The headers of a request made as `account`."""
    return {"Authorization": f"Bearer {account.token}"}


class Api:
    """HTTP calls as a client makes them, to an in-process server."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.http = httpx.AsyncClient(base_url=running.http_url, timeout=TIMEOUT)

    async def signup(self, role: str = "patient", name: str | None = None) -> Account:
        username = new_username("user")
        body = {"username": username, "password": PASSWORD, "display_name": name or username.title()}
        if role != "patient":
            body["role"] = role
        r = await self.http.post("/api/signup", json=body)
        assert r.status_code == 201, r.text
        return Account.signed_in(username, r.json())

    async def staff(self, role: str = "facilitator") -> Account:
        """A staff account, made the way `hearth user create` makes it, then signed in over HTTP."""
        username = new_username("staff")
        await self.running.hub.accounts.create_user(username, PASSWORD, username.title(), Role(role))
        r = await self.http.post("/api/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return Account.signed_in(username, r.json())

    async def room(self, owner: Account, kind: str = "drop_in", name: str = "Room") -> str:
        r = await self.http.post("/api/rooms", json={"name": name, "kind": kind}, headers=auth(owner))
        assert r.status_code == 201, r.text
        room_id: str = r.json()["room"]["id"]
        return room_id

    async def add_member(self, actor: Account, room: str, user: Account) -> httpx.Response:
        return await self.http.post(f"/api/rooms/{room}/members", json={"user": user.id}, headers=auth(actor))

    async def aclose(self) -> None:
        await self.http.aclose()
