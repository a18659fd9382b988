"""Accounts: argon2 password hashes on a bounded pool, signed expiring tokens, revocation, the
Origin check."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import orjson
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from rooms.errors import BadRequest, Forbidden, RateLimited, Unauthenticated
from rooms.model import SIGNUP_ROLES, Role, User, UserId
from rooms.ports import Revocations
from rooms.service import clean_name
from server.settings import Settings
from server.workpool import WorkPool

log = logging.getLogger("hearth.auth")
T = TypeVar("T")

_USERNAME = re.compile(r"[a-z0-9][a-z0-9_.\-]{2,31}")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


def load_secret(settings: Settings) -> bytes:
    """HEARTH_SECRET_KEY, or in development a secret generated once in the data directory.

    Several workers may start at once: the secret is written to a private temporary file and
    linked into place, so every worker reads the one that won, never a half-written file.
    """
    if settings.secret_key:
        return settings.secret_key.encode()
    settings.check()  # outside development a key must be given
    path = settings.data_dir / "secret_key"
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        draft = path.with_name(f".secret_key.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    log.warning("HEARTH_SECRET_KEY is not set; using the development secret in %s", path)
    return path.read_text().strip().encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Claims:
    """What a valid token says: whose it is, its id (for revocation) and when it expires."""

    user: UserId
    jti: str
    exp: int


class Tokens:
    """`v1.<payload>.<HMAC-SHA256>`, base64url; the payload names the user, an id and an expiry."""

    def __init__(self, secret: bytes, *, ttl: float) -> None:
        self._key = hashlib.sha256(b"hearth token v1" + secret).digest()
        self.ttl = ttl

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, user: UserId) -> tuple[str, Claims]:
        claims = Claims(user, secrets.token_hex(12), int(time.time() + self.ttl))
        payload = _b64(orjson.dumps({"sub": claims.user, "jti": claims.jti, "exp": claims.exp}))
        return f"v1.{payload}.{self._sign(payload)}", claims

    def verify(self, token: object) -> Claims:
        invalid = Unauthenticated("Your sign-in is not valid. Please sign in again.")
        # ASCII only: hmac.compare_digest refuses a str with other characters (TypeError),
        # and a lone surrogate cannot even be encoded to be signed.
        if not isinstance(token, str) or len(token) > 512 or not token.isascii() or token.count(".") != 2:
            raise invalid
        version, payload, signature = token.split(".")
        if version != "v1" or not hmac.compare_digest(self._sign(payload), signature):
            raise invalid
        try:
            data = orjson.loads(_unb64(payload))
            claims = Claims(UserId(str(data["sub"])), str(data["jti"]), int(data["exp"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise invalid from exc
        if claims.exp < time.time():
            raise Unauthenticated("Your sign-in has expired. Please sign in again.")
        return claims


class Passwords:
    """Argon2 hashes and checks, on a pool of their own (server.workpool): one costs about
    0.2 s of CPU and 64 MiB with the default parameters, so at most `workers` run at once and
    `queue` wait, and a sign-in beyond that is refused at once."""

    def __init__(self, *, memory_kib: int, time_cost: int, workers: int, queue: int) -> None:
        self.hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        busy = "Signing in is busy right now. Try again in a moment."
        self._pool = WorkPool("argon2", workers=workers, queue=queue, busy=busy)
        self._dummy: str | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> Passwords:
        limits = settings.limits
        return cls(
            memory_kib=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
            workers=limits.hash_workers,
            queue=limits.hash_queue,
        )

    async def _run(self, work: Callable[[], T]) -> T:
        return await self._pool.run(work)

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self.hasher.hash(password))

    async def check(self, stored: str | None, password: str) -> bool:
        """Whether `password` matches the hash `stored`. With no hash (no such user), a dummy
        hash of the same cost is checked: a wrong password for an unknown user took 30 ms
        and one for a known user 220 ms, which told which usernames exist."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(24))
        against = self._dummy if stored is None else stored
        try:
            await self._run(lambda: self.hasher.verify(against, password))
        except (VerificationError, InvalidHashError):
            return False
        return stored is not None

    def needs_rehash(self, stored: str) -> bool:
        return self.hasher.check_needs_rehash(stored)

    def close(self) -> None:
        self._pool.close()


class AccountStore(Revocations, Protocol):
    """What accounts need of the store (implementation: server.store.directory.SqlDirectory)."""

    async def get_user(self, user: UserId) -> User | None: ...

    async def find_login(self, username: str) -> tuple[User, str] | None:
        """The user and their password hash, by username (case-insensitive)."""

    async def create_user(self, username: str, name: str, role: Role, password_hash: str) -> User:
        """A new user; Conflict when the username is taken."""

    async def set_password(self, user: UserId, password_hash: str) -> None: ...


class Accounts:
    """Signup, login, logout and token checks, on the directory."""

    def __init__(self, directory: AccountStore, tokens: Tokens, passwords: Passwords) -> None:
        self.directory = directory
        self.tokens = tokens
        self.passwords = passwords

    async def hash_password(self, password: object) -> str:
        return await self.passwords.hash(check_password(password))

    async def create_user(self, username: object, password: object, name: str, role: Role) -> User:
        username = check_username(username)
        name = clean_name(name, what="Display name")
        return await self.directory.create_user(username, name, role, await self.hash_password(password))

    async def signup(self, username: object, password: object, name: str, role: Role = Role.PATIENT) -> User:
        """Anyone may sign up as a patient or caregiver; staff roles come from the command line."""
        if role not in SIGNUP_ROLES:
            raise Forbidden("Staff accounts are made by an administrator.")
        return await self.create_user(username, password, name, role)

    async def login(self, username: object, password: object) -> User:
        """The user, if the password is theirs. Known and unknown usernames cost the same
        argon2 check, so neither the answer nor its time tells whether an account exists."""
        wrong = Unauthenticated("Wrong username or password.")
        if not isinstance(username, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD:
            raise wrong
        found = await self.directory.find_login(username)
        user, stored = found if found is not None else (None, None)
        if not await self.passwords.check(stored, password) or user is None or stored is None:
            raise wrong
        if self.passwords.needs_rehash(stored):
            with contextlib.suppress(RateLimited):  # an upgrade of the hash can wait for a quieter login
                await self.directory.set_password(user.id, await self.hash_password(password))
        return user

    async def authenticate(self, token: object) -> tuple[User, Claims]:
        """The user a token belongs to; raises Unauthenticated if it is invalid, expired or revoked."""
        claims = self.tokens.verify(token)
        user = await self.directory.get_user(claims.user)
        if user is None or await self.directory.is_revoked(claims.jti):
            raise Unauthenticated("Your sign-in is not valid. Please sign in again.")
        return user, claims

    async def logout(self, claims: Claims) -> None:
        await self.directory.revoke_token(claims.jti, claims.exp * 1_000_000)


def check_username(username: object) -> str:
    if not isinstance(username, str) or not _USERNAME.fullmatch(username.lower()):
        raise BadRequest("A username is 3 to 32 letters, digits, dots, dashes or underscores.")
    return username.lower()


def check_password(password: object) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadRequest(f"A password is {MIN_PASSWORD} to {MAX_PASSWORD} characters.")
    return password


def origin_allowed(origin: str | None, host: str | None, settings: Settings) -> bool:
    """A websocket handshake's Origin is allowed when there is none (a native client), when
    it is HEARTH_PUBLIC_ORIGIN or one of HEARTH_ALLOWED_ORIGINS, and in development when its
    host is the request's Host. Only in development: the Host header is the client's to
    write, and a page on a rebound domain sends its own name in both."""
    if origin is None:
        return True
    origin = _origin(origin)
    allowed = {_origin(o) for o in (*settings.allowed_origins, settings.public_origin) if o}
    if origin in allowed or "*" in allowed:
        return True
    return settings.development and host is not None and urlsplit(origin).netloc == host.lower()


def _origin(value: str) -> str:
    return value.strip().rstrip("/").lower()
