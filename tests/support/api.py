"""The HTTP API as a client calls it: `Api` signs people up, signs staff in, makes rooms
and adds members; `Account` is who it signed in, `auth` the header that says so.

Every room belongs to a community, and people meet there under a member card: each `Api`
(one per test) makes an open community of its own the first time it is asked and, unless told
otherwise, makes everyone it signs up a member of it, under their display name. Display names
are unique in a community, so a test may name its people as it likes ("Rosa", "Sam") however
many tests before it on the same server did too. `Account.member` is that
member id: what peers see of them (`from`, presence, session events), where `Account.id` is
the account that only they and staff know.
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
    member: str = ""  # the member id in the test community ("" when not a member)

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
        self.test_community: str | None = None

    async def community(self) -> str:
        """This test's community (open), made by an admin the first time it is asked."""
        made = self.test_community
        if made is None:
            admin = await self.staff("admin", join=False)
            r = await self.http.post(
                "/api/communities", json={"name": "Test community", "join": "open"}, headers=auth(admin)
            )
            assert r.status_code == 201, r.text
            made = self.test_community = r.json()["community"]["id"]
        return made

    async def join(self, account: Account, community: str | None = None, name: str | None = None) -> str:
        """Make `account` a member of `community` (the test community) under `name` (their
        display name); returns the member id, which it also keeps as `account.member` for the
        test community."""
        community = community or await self.community()
        r = await self.http.post(
            f"/api/communities/{community}/members",
            json={"display_name": name or account.name},
            headers=auth(account),
        )
        assert r.status_code == 201, r.text
        member: str = r.json()["member"]["id"]
        if community == await self.community():
            account.member = member
        return member

    async def signup(self, role: str = "patient", name: str | None = None, *, join: bool = True) -> Account:
        username = new_username("user")
        body = {"username": username, "password": PASSWORD, "display_name": name or username.title()}
        if role != "patient":
            body["role"] = role
        r = await self.http.post("/api/signup", json=body)
        assert r.status_code == 201, r.text
        account = Account.signed_in(username, r.json())
        if join:
            await self.join(account)
        return account

    async def staff(self, role: str = "facilitator", *, join: bool = True) -> Account:
        """A staff account, made the way `hearth user create` makes it, then signed in over HTTP."""
        username = new_username("staff")
        await self.running.hub.accounts.create_user(username, PASSWORD, username.title(), Role(role))
        r = await self.http.post("/api/login", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        account = Account.signed_in(username, r.json())
        if join:
            await self.join(account)
        return account

    async def room(
        self, owner: Account, kind: str = "drop_in", name: str = "Room", community: str | None = None
    ) -> str:
        body = {"name": name, "kind": kind, "community": community or await self.community()}
        r = await self.http.post("/api/rooms", json=body, headers=auth(owner))
        assert r.status_code == 201, r.text
        room_id: str = r.json()["room"]["id"]
        return room_id

    async def add_member(self, actor: Account, room: str, user: Account, role: str = "member") -> httpx.Response:
        """Add `user` to the room by their member card (by account id when they have none here)."""
        who = {"member": user.member} if user.member else {"user": user.id}
        return await self.http.post(f"/api/rooms/{room}/members", json={**who, "role": role}, headers=auth(actor))

    async def aclose(self) -> None:
        await self.http.aclose()
