"""The SQLite store's hot calls timed alone, in one process: wall and CPU time per call.

    uv run python bench/store.py [--rounds N]

- `member_role`: the membership lookup every join makes (a cache miss each time);
- `append 1`: a group commit of one message (many small rooms: nearly every message);
- `append 100`: a group commit of 100 messages over 10 rooms (the durable workload).

The database is a new file in a temporary directory, with Hearth's pragmas
(`synchronous=FULL`, WAL). CPU time is the whole process's, the store's threads included.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Awaitable, Callable

import uvloop

from rooms.model import EventKind, NewEvent, Role, RoomId, User, UserId
from server.store.directory import SqlDirectory
from server.store.engine import open_engines
from server.store.sql import SqlTranscriptStore
from server.store.tables import metadata, rooms


async def timed(name: str, rounds: int, call: Callable[[int], Awaitable[object]]) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(rounds):
        await call(i)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{name:12s} {rounds:6d} calls  wall {wall / rounds * 1e6:8.0f} µs  CPU {cpu / rounds * 1e6:8.0f} µs")


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engines = open_engines(f"sqlite+aiosqlite:///{tmp}/hearth.db")
        try:
            async with engines.writer.begin() as conn:
                await conn.run_sync(metadata.create_all)
                for r in range(10):
                    await conn.execute(rooms.insert().values(id=f"r{r}", name="Room", kind="drop_in", created_at=0))
            directory, store = SqlDirectory(engines), SqlTranscriptStore(engines)
            sender = User(UserId("u1"), "bench", "Bench", Role.PATIENT)

            def message(room: int, key: str) -> NewEvent:
                return NewEvent(RoomId(f"r{room}"), EventKind.MESSAGE, sender, {"text": "x" * 40}, key)

            await timed("member_role", rounds, lambda i: directory.member_role(RoomId(f"r{i}"), UserId("u1")))
            await timed("append 1", rounds, lambda i: store.append([message(0, f"a{i}")]))
            await timed(
                "append 100",
                max(1, rounds // 10),
                lambda i: store.append([message(j % 10, f"b{i}.{j}") for j in range(100)]),
            )
        finally:
            await engines.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000, help="calls of each kind (append 100: a tenth)")
    uvloop.run(main(parser.parse_args().rounds))
