"""The transcript store's group commit, called directly with batches bigger than a socket
ever makes them: what the committer can hand it under load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rooms.errors import Conflict, NotFound
from rooms.model import Event, EventKind, NewEvent, Role, RoomId, RoomKind, Seq, User
from server.settings import normalise_db_url
from server.store.directory import SqlDirectory
from server.store.engine import open_engines
from server.store.migrate import upgrade
from server.store.sql import SqlTranscriptStore


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[SqlTranscriptStore, User]]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hearth.db'}"
    else:
        url = normalise_db_url(request.getfixturevalue("postgres_url"))
    engines = open_engines(url)
    await upgrade(engines)
    user = await SqlDirectory(engines).create_user("writer", "Writer", Role.PATIENT, "x")
    yield SqlTranscriptStore(engines), user
    await engines.dispose()


async def test_one_batch_of_600_with_300_retries_stores_each_key_once(store: tuple[SqlTranscriptStore, User]) -> None:
    """The idempotency probe covers every key of a batch however many statements it takes."""
    transcripts, user = store
    room = (await SqlDirectory(transcripts.engines).create_room("r", RoomKind.GROUP, user)).id

    def sends(ids: range) -> list[NewEvent]:
        return [NewEvent(room, EventKind.MESSAGE, user, {"text": f"m{i}"}, client_id=f"c{i}") for i in ids]

    first = await transcripts.append(sends(range(300)))
    both = await transcripts.append(sends(range(300)) + sends(range(300, 600)))
    assert all(isinstance(e, Event) for e in first + both)
    assert [e.seq for e in both[:300]] == [e.seq for e in first] == list(range(1, 301))  # type: ignore[union-attr]
    assert [e.seq for e in both[300:]] == list(range(301, 601))  # type: ignore[union-attr]
    again = await transcripts.append(sends(range(599, 600)))
    assert [e.seq for e in again] == [600]  # type: ignore[union-attr]


async def test_two_workers_committing_the_same_retries_at_once_store_each_key_once(
    store: tuple[SqlTranscriptStore, User],
) -> None:
    """A phone that resends through a second worker while the first still commits: both
    workers' batches name the same keys at the same moment. Each key is stored once, both
    senders get that one event back, and the room's seqs have no hole."""
    transcripts, user = store
    room = (await SqlDirectory(transcripts.engines).create_room("r", RoomKind.GROUP, user)).id
    url = transcripts.engines.writer.url.render_as_string(hide_password=False)
    other = SqlTranscriptStore(open_engines(url))  # a second worker's engines
    try:
        for round_ in range(20):
            keys = [f"k{round_}.{i}" for i in range(10)]
            sends = [NewEvent(room, EventKind.MESSAGE, user, {"text": k}, client_id=k) for k in keys]
            here, there = await asyncio.gather(transcripts.append(sends), other.append(sends[5:] + sends[:5]))
            assert all(isinstance(e, Event) for e in here + there)
            assert {e.client_id: e for e in here} == {e.client_id: e for e in there}  # type: ignore[union-attr]
        stored = await transcripts.read_since(room, Seq(0), 1000)
        assert [e.seq for e in stored] == list(range(1, 201))
        assert len({e.client_id for e in stored}) == 200
    finally:
        await other.engines.dispose()


async def test_a_batch_settles_each_event_on_its_own(store: tuple[SqlTranscriptStore, User]) -> None:
    """One batch: a send to a room that is gone is refused alone; a key sent twice is one
    event; a key reused for another kind of event is a conflict; the rest is stored in order."""
    transcripts, user = store
    room = (await SqlDirectory(transcripts.engines).create_room("r", RoomKind.GROUP, user)).id
    gone = RoomId("r_gone")
    batch = [
        NewEvent(room, EventKind.MESSAGE, user, {"text": "one"}, client_id="k1"),
        NewEvent(gone, EventKind.MESSAGE, user, {"text": "lost"}, client_id="k2"),
        NewEvent(room, EventKind.MESSAGE, user, {"text": "one"}, client_id="k1"),
        NewEvent(room, EventKind.SESSION, user, {"action": "opened"}, client_id="k1"),
        NewEvent(room, EventKind.MESSAGE, user, {"text": "two"}),
    ]
    one, lost, again, other, two = await transcripts.append(batch)
    assert isinstance(one, Event) and isinstance(two, Event)
    assert (one.seq, two.seq) == (1, 2)
    assert isinstance(lost, NotFound)
    assert again == one
    assert isinstance(other, Conflict)
    assert [e.body["text"] for e in await transcripts.read_since(room, Seq(0), 10)] == ["one", "two"]
