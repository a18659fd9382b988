"""Calendar feed tokens: the read-only secret in a calendar subscription's URL.

Calendar apps subscribe to a URL and cannot send an Authorization header, so each user also
has a calendar feed token: `c1.<user>.<HMAC-SHA256>` under a key of its own (derived from the
app secret with another label than sign-in tokens). It opens that user's .ics feed, read
only, and nothing else: it is never accepted as a Bearer token and a Bearer token is never
accepted in its place. This is the one place a secret travels in a URL, which is why it can
only read, and why the access log names the route's template, `/api/calendar/{token}.ics`,
and never the path (`server.accesslog`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from rooms.errors import Unauthenticated
from rooms.model import User, UserId
from rooms.ports import Directory

# ASCII base64url only. hmac.compare_digest raises TypeError on a str with other
# characters, which answered a tampered link with a 500 instead of a 401.
_FEED_TOKEN = re.compile(r"c1\.([A-Za-z0-9_-]{1,200})\.([A-Za-z0-9_-]{43})")
_INVALID = "This calendar link is not valid. Get a new one from Hearth."


class FeedTokens:
    """Read-only calendar feed tokens: `c1.<user id, base64url>.<HMAC-SHA256, base64url>`.

    They do not expire (a calendar subscription lives for years); changing HEARTH_SECRET_KEY
    invalidates all of them.
    """

    def __init__(self, secret: bytes) -> None:
        self._key = hashlib.sha256(b"hearth calendar feed v1" + secret).digest()

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, user: UserId) -> str:
        payload = _b64(user.encode())
        return f"c1.{payload}.{self._sign(payload)}"

    def verify(self, token: str) -> UserId:
        invalid = Unauthenticated(_INVALID)
        match = _FEED_TOKEN.fullmatch(token)
        if match is None:
            raise invalid
        payload, signature = match.groups()
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            raise invalid
        try:
            return UserId(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode())
        except ValueError as exc:
            raise invalid from exc

    async def holder(self, token: str, directory: Directory) -> User:
        """The user whose feed `token` opens; Unauthenticated when it is not valid, or when
        that user is gone."""
        user = await directory.get_user(self.verify(token))
        if user is None:
            raise Unauthenticated(_INVALID)
        return user


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
