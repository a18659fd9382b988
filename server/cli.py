"""`hearth serve | migrate | user create | demo | safety scan`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from rooms.errors import HearthError
from rooms.model import Role
from rooms.safety import PhraseError
from server.auth import Accounts, Passwords, Tokens, load_secret
from server.logs import configure
from server.settings import ConfigError, Settings
from server.store.directory import SqlDirectory
from server.store.engine import Engines, open_engines
from server.store.migrate import upgrade
from server.store.sql import SqlTranscriptStore

T = TypeVar("T")


def _with_store(settings: Settings, work: Callable[[Engines], Awaitable[T]]) -> T:
    async def run() -> T:
        engines = open_engines(settings.db_url, sqlite_synchronous=settings.sqlite_synchronous)
        try:
            await upgrade(engines)
            return await work(engines)
        finally:
            await engines.dispose()

    return asyncio.run(run())


def _accounts(settings: Settings, engines: Engines) -> Accounts:
    tokens = Tokens(load_secret(settings), ttl=settings.token_ttl)
    return Accounts(SqlDirectory(engines), tokens, Passwords.for_settings(settings))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from server.serve import serve
    from server.workers import run_workers

    port = settings.port if args.port is None else args.port
    settings = settings.with_(host=args.host or settings.host, port=port)
    settings.check()
    if args.demo:
        cmd_demo(args, settings)
    if args.workers > 1:
        if settings.development:
            _with_store(settings, _nothing)  # migrate once, before the workers start
        return run_workers(settings, args.workers)
    serve(settings, reuse_port=args.reuse_port)
    return 0


async def _nothing(engines: Engines) -> None:
    return None


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    _with_store(settings, _nothing)
    print("schema is up to date")
    return 0


def cmd_user_create(args: argparse.Namespace, settings: Settings) -> int:
    if args.password is not None:
        # Refused, not merely warned about: by now it has been in the process list for
        # everyone on the machine to read, and in the shell's history.
        print("hearth: --password shows the password to everyone on this machine (ps); use", file=sys.stderr)
        print("        --password-stdin, HEARTH_PASSWORD or the prompt, and change that password", file=sys.stderr)
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = os.environ.get("HEARTH_PASSWORD") or getpass.getpass("Password: ")

    async def work(engines: Engines) -> str:
        user = await _accounts(settings, engines).create_user(
            args.name, password, args.display_name or args.name, Role(args.role)
        )
        return user.id

    print(_with_store(settings, work))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from server.demo import seed
    from server.store.communities import SqlCommunities

    async def work(engines: Engines) -> list[str]:
        directory, communities = SqlDirectory(engines), SqlCommunities(engines)
        return await seed(_accounts(settings, engines), directory, communities, SqlTranscriptStore(engines))

    lines = _with_store(settings, work)
    print(f"Demo data is ready. Sign in at http://{settings.host}:{settings.port}/ as:")
    print("\n".join(lines))
    return 0


def cmd_safety_scan(args: argparse.Namespace, settings: Settings) -> int:
    """Messages on stdin, one a line; one JSON verdict a line on stdout, in order, exactly one
    per input line (bytes split on "\\n" only, a "\\r" before it dropped, invalid UTF-8
    replaced), by the detector the server uses."""
    from rooms.safety import load_detector

    detector = load_detector(args.locale)
    miss = _verdict(None, None, args.phrases)
    hits: dict[str, bytes] = {}  # by phrase id: the same few lines, encoded once
    out = sys.stdout.buffer
    # Written a batch at a time (stdout may be unbuffered: PYTHONUNBUFFERED), or a line at a
    # time for someone typing.
    batch = 1 if sys.stdin.isatty() else 1024
    pending: list[bytes] = []
    for raw in sys.stdin.buffer:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if line.endswith(b"\r"):
            line = line[:-1]
        hit = detector.scan(line.decode("utf-8", "replace"))
        if hit is None:
            pending.append(miss)
        else:
            verdict = hits.get(hit.phrase)
            if verdict is None:
                verdict = hits[hit.phrase] = _verdict(hit.category, hit.phrase, args.phrases)
            pending.append(verdict)
        if len(pending) >= batch:
            out.write(b"".join(pending))
            out.flush()
            pending.clear()
    out.write(b"".join(pending))
    out.flush()
    return 0


def _verdict(category: str | None, phrase: str | None, with_phrase: bool) -> bytes:
    verdict: dict[str, object] = {"hit": category is not None, "category": category}
    if with_phrase:
        verdict["phrase"] = phrase
    return (json.dumps(verdict) + "\n").encode()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hearth", description="Hearth, a real-time server for support groups.")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (PORT, DATABASE_URL, REDIS_URL from the environment)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--demo", action="store_true", help="seed the demo users and rooms first")
    serve.add_argument("--workers", type=int, default=1, help="worker processes on one port (needs REDIS_URL)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a worker of --workers
    serve.set_defaults(run=cmd_serve)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(run=cmd_migrate)
    demo = sub.add_parser("demo", help="seed example users, rooms and messages")
    demo.set_defaults(run=cmd_demo)
    user = sub.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    create = user.add_parser("create", help="create a user with any role")
    create.add_argument("name", help="the username")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--password", help=argparse.SUPPRESS)  # refused: see cmd_user_create
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (else HEARTH_PASSWORD, a prompt)"
    )
    create.add_argument("--display-name")
    create.set_defaults(run=cmd_user_create)
    safety = sub.add_parser("safety", help="the crisis detector").add_subparsers(dest="safety_command", required=True)
    scan = safety.add_parser(
        "scan", help='messages on stdin, one a line; writes {"hit", "category"} as JSON, one line each'
    )
    scan.add_argument("--locale", default="en", help="the phrase file to use (default: en)")
    scan.add_argument("--phrases", action="store_true", help="add the id of the phrase that matched")
    scan.set_defaults(run=cmd_safety_scan)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    configure(json=settings.log_json)
    try:
        code: int = args.run(args, settings)
        return code
    except HearthError as exc:
        print(f"hearth: {exc.message}", file=sys.stderr)
        return 2
    except (ConfigError, PhraseError) as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
