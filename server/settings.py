"""Configuration, read once from the environment into frozen dataclasses.

With nothing set, Hearth runs one process on a SQLite file and the memory broker.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A setting Hearth refuses to start with; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Every limit a client can hit; each is answered with a protocol error or close code."""

    # Frames
    max_frame: int = 64 * 1024  # bytes; larger frames get `too_large`
    hard_frame: int = 1024 * 1024  # bytes; larger frames are refused by the websocket layer (1009)
    auth_frame: int = 4096  # bytes a frame may be before `auth` succeeded (an `auth` is a few hundred)
    max_text: int = 4000  # characters of a message
    max_depth: int = 16  # nesting of maps and lists in one frame
    # Timeouts
    request_timeout: float = 10.0  # seconds for a whole HTTP request (a websocket upgrade too): else 408
    auth_timeout: float = 10.0  # seconds to send `auth` before close 4401
    ping_interval: float = 20.0  # seconds between server pings; a missed pong closes
    close_timeout: float = 10.0  # seconds a closing socket is given before it is aborted
    # Connections, per worker
    connections: int = 50_000  # TCP connections at once (HTTP and websockets); more get 503
    connections_per_address: int = 256  # from one client address (an IPv6 /64); more get 503
    # Rate: a token bucket per connection
    rate: float = 20.0  # commands per second
    burst: float = 40.0
    strikes: int = 20  # rate_limited replies in a row before close 4429
    user_rate: float = 10.0  # durable events (send, edit, delete, react) per second per user, all workers
    user_burst: float = 30.0
    user_connections: int = 20  # open sockets per user across all workers; more get 4429
    signin_rate: float = 1.0  # signups and logins per second per client address
    signin_burst: float = 10.0
    # Outbox: bytes held back while a client's socket is not taking them; past either, close 4408
    outbox_bytes: int = 1024 * 1024  # for one connection
    user_outbox_bytes: int = 4 * 1024 * 1024  # for all of a user's connections on one worker
    # History and resume
    history_max: int = 100
    resume_max: int = 1000  # events a join with `since` returns at most
    reply_bytes: int = 256 * 1024  # events a join or history reply carries at most, encoded
    ring: int = 1024  # recent events per room kept in memory for resume
    # Sign-in: per account as well as per address, and the argon2 work every sign-in costs
    signin_account_rate: float = 1 / 60  # login attempts per second per username, all workers
    signin_account_burst: float = 10.0
    hash_workers: int = 2  # argon2 hashes or checks running at once per worker (64 MiB, ~0.2 s each)
    hash_queue: int = 8  # more wait their turn (about 1 s at most); past that, `rate_limited`


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    env: str = "development"
    data_dir: Path = Path("data")
    database_url: str = ""
    broker_url: str = "memory://"
    redis_prefix: str = "hearth:"
    presence_ttl: float = 24.0  # seconds a connection's lease lives without a heartbeat
    secret_key: str | None = None
    public_origin: str | None = None  # where browsers reach Hearth: `https://groups.example.org`
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()  # addresses or networks whose X-Forwarded-For is believed
    metrics_token: str | None = None  # Bearer token for /metrics; without it, loopback in development only
    signup_open: bool = True
    token_ttl: float = 30 * 24 * 3600.0
    argon2_memory_kib: int = 65536
    argon2_time_cost: int = 3
    commit_batch: int = 512
    scheduler_interval: float = 15.0  # seconds between looks at the calendar (reminders, lobbies)
    drain_timeout: float = 10.0  # seconds SIGTERM waits for pending commits and acks
    gap_wait: float = 0.5  # seconds a feed waits for a missing seq before reading the store
    sqlite_synchronous: str = "FULL"
    log_format: str = ""  # "json" or "text"; by default JSON except in development
    limits: Limits = field(default_factory=Limits)

    @property
    def development(self) -> bool:
        return self.env == "development"

    @property
    def log_json(self) -> bool:
        return self.log_format == "json" or (not self.log_format and not self.development)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'hearth.db'}"

    def check(self) -> None:
        """Raise ConfigError for a setting that is unsafe, or cannot work, where it is used."""
        if not self.development and not self.secret_key:
            raise ConfigError(
                "HEARTH_SECRET_KEY must be set outside development: it signs every token, and each "
                "worker would otherwise make up one of its own"
            )
        for proxy in self.trusted_proxies:
            try:
                if proxy != "*":
                    ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError(f"HEARTH_TRUSTED_PROXIES: {proxy!r} is not an address or a network") from None
        if self.public_origin is not None:
            parts = urlsplit(self.public_origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise ConfigError("HEARTH_PUBLIC_ORIGIN is a scheme and a host, such as https://groups.example.org")

    def with_(self, **changes: object) -> Self:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        lim, base = Limits(), cls()
        limits = Limits(
            max_text=int(env.get("HEARTH_MAX_TEXT", lim.max_text)),
            rate=float(env.get("HEARTH_RATE", lim.rate)),
            burst=float(env.get("HEARTH_BURST", lim.burst)),
            outbox_bytes=int(env.get("HEARTH_OUTBOX_BYTES", lim.outbox_bytes)),
            ping_interval=float(env.get("HEARTH_PING_INTERVAL", lim.ping_interval)),
            close_timeout=float(env.get("HEARTH_CLOSE_TIMEOUT", lim.close_timeout)),
            request_timeout=float(env.get("HEARTH_REQUEST_TIMEOUT", lim.request_timeout)),
            connections=int(env.get("HEARTH_MAX_CONNECTIONS", lim.connections)),
            connections_per_address=int(env.get("HEARTH_MAX_CONNECTIONS_PER_ADDRESS", lim.connections_per_address)),
            user_rate=float(env.get("HEARTH_USER_RATE", lim.user_rate)),
            user_burst=float(env.get("HEARTH_USER_BURST", lim.user_burst)),
            user_connections=int(env.get("HEARTH_USER_CONNECTIONS", lim.user_connections)),
            # Sign-in
            signin_rate=float(env.get("HEARTH_SIGNIN_RATE", lim.signin_rate)),
            signin_burst=float(env.get("HEARTH_SIGNIN_BURST", lim.signin_burst)),
            signin_account_rate=float(env.get("HEARTH_SIGNIN_ACCOUNT_RATE", lim.signin_account_rate)),
            signin_account_burst=float(env.get("HEARTH_SIGNIN_ACCOUNT_BURST", lim.signin_account_burst)),
        )
        return cls(
            host=env.get("HEARTH_HOST", base.host),
            port=int(env.get("PORT", base.port)),
            env=env.get("HEARTH_ENV", base.env),
            data_dir=Path(env.get("HEARTH_DATA_DIR", str(base.data_dir))),
            database_url=normalise_db_url(env.get("HEARTH_DATABASE_URL") or env.get("DATABASE_URL", "")),
            broker_url=env.get("HEARTH_BROKER_URL") or env.get("REDIS_URL") or base.broker_url,
            redis_prefix=env.get("HEARTH_REDIS_PREFIX", base.redis_prefix),
            presence_ttl=float(env.get("HEARTH_PRESENCE_TTL", base.presence_ttl)),
            scheduler_interval=float(env.get("HEARTH_SCHEDULER_INTERVAL", base.scheduler_interval)),
            secret_key=env.get("HEARTH_SECRET_KEY") or None,
            public_origin=env.get("HEARTH_PUBLIC_ORIGIN", "").strip().rstrip("/") or None,
            allowed_origins=tuple(
                o.strip().rstrip("/") for o in env.get("HEARTH_ALLOWED_ORIGINS", "").split(",") if o.strip()
            ),
            trusted_proxies=_items(env.get("HEARTH_TRUSTED_PROXIES", "")),
            metrics_token=env.get("HEARTH_METRICS_TOKEN") or None,
            signup_open=env.get("HEARTH_SIGNUP_OPEN", "1").lower() not in ("0", "false", "no"),
            token_ttl=float(env.get("HEARTH_TOKEN_TTL", base.token_ttl)),
            sqlite_synchronous=env.get("HEARTH_SQLITE_SYNCHRONOUS", base.sqlite_synchronous).upper(),
            log_format=env.get("HEARTH_LOG_FORMAT", "").lower(),
            limits=limits,
        )


def _items(value: str) -> tuple[str, ...]:
    """A comma-separated list, blanks left out."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def normalise_db_url(url: str) -> str:
    """Accept the `postgres://` URLs platforms hand out and pick the async drivers."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url
