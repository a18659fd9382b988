"""The transcript store's group commit, called directly with batches bigger than a socket
ever makes them: what the committer can hand it under load."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from rooms.errors import Conflict, NotFound
from rooms.model import Event, EventKind, JoinPolicy, Member, NewEvent, Role, RoomId, RoomKind, Seq
from rooms.names import name_key
from server.settings import normalise_db_url
from server.store.communities import SqlCommunities
from server.store.directory import SqlDirectory
from server.store.engine import open_engines
from server.store.migrate import upgrade
from server.store.sql import SqlTranscriptStore
from server.store.tables import rooms


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[SqlTranscriptStore, Member]]:
    """The store, and the writer: a member of the community every room here is made in."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'hearth.db'}"
    else:
        url = normalise_db_url(request.getfixturevalue("postgres_url"))
    engines = open_engines(url)
    await upgrade(engines)
    user = await SqlDirectory(engines).create_user("writer", "Writer", Role.PATIENT, "x")
    communities = SqlCommunities(engines)
    community = await communities.create("Writers", JoinPolicy.OPEN, user.id)
    yield SqlTranscriptStore(engines), await communities.add_member(community.id, user, "Writer", name_key("Writer"))
    await engines.dispose()


async def _room(transcripts: SqlTranscriptStore, member: Member, name: str = "r") -> RoomId:
    """A group room of the member's community, made by their account."""
    directory = SqlDirectory(transcripts.engines)
    account = await directory.get_user(member.account)
    assert account is not None
    return (await directory.create_room(name, RoomKind.GROUP, account, member.community)).id


async def test_one_batch_of_600_with_300_retries_stores_each_key_once(store: tuple[SqlTranscriptStore, Member]) -> None:
    """The idempotency probe covers every key of a batch however many statements it takes."""
    transcripts, user = store
    room = await _room(transcripts, user)

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
    store: tuple[SqlTranscriptStore, Member],
) -> None:
    """A phone that resends through a second worker while the first still commits: both
    workers' batches name the same keys at the same moment. Each key is stored once, both
    senders get that one event back, and the room's seqs have no hole."""
    transcripts, user = store
    room = await _room(transcripts, user)
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
        assert [e.ts for e in stored] == sorted(e.ts for e in stored)  # times follow seqs
    finally:
        await other.engines.dispose()


async def test_a_batch_settles_each_event_on_its_own(store: tuple[SqlTranscriptStore, Member]) -> None:
    """One batch: a send to a room that is gone is refused alone; a key sent twice is one
    event; a key reused for another kind of event is a conflict; the rest is stored in order."""
    transcripts, user = store
    room = await _room(transcripts, user)
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


async def test_batches_over_two_rooms_keep_each_rooms_order_beside_edits_on_another_worker(
    store: tuple[SqlTranscriptStore, Member],
) -> None:
    """Messages to two rooms in one batch land at each room's next seqs, in batch order,
    while another worker's batches edit in both rooms at once (taking the rooms' locks the
    other way round): no deadlock, no hole, no repeat."""
    transcripts, user = store
    rooms_ = (await _room(transcripts, user, "a"), await _room(transcripts, user, "b"))
    first = await transcripts.append([NewEvent(r, EventKind.MESSAGE, user, {"text": "0"}) for r in rooms_])
    targets = {e.room: e.seq for e in first if isinstance(e, Event)}
    url = transcripts.engines.writer.url.render_as_string(hide_password=False)
    other = SqlTranscriptStore(open_engines(url))
    try:
        for i in range(20):
            sends = [NewEvent(r, EventKind.MESSAGE, user, {"text": f"{i}.{r}.{j}"}) for j in range(3) for r in rooms_]
            edits = [NewEvent(r, EventKind.EDIT, user, {"text": f"edit {i}"}, target=targets[r]) for r in rooms_[::-1]]
            sent, edited = await asyncio.gather(transcripts.append(sends), other.append(edits))
            assert all(isinstance(e, Event) for e in sent + edited)
            for r in rooms_:
                mine = [e.seq for e in sent if isinstance(e, Event) and e.room == r]
                assert mine == list(range(mine[0], mine[0] + 3))
        for r in rooms_:
            stored = await transcripts.read_since(r, Seq(0), 1000)
            assert [e.seq for e in stored] == list(range(1, 1 + 1 + 20 * 3 + 20))
            texts = [e.body["text"] for e in stored if e.kind is EventKind.MESSAGE]
            assert texts[:4] == ["edit 19", f"0.{r}.0", f"0.{r}.1", f"0.{r}.2"]
    finally:
        await other.engines.dispose()


async def test_a_commit_that_waited_for_its_room_is_stamped_when_it_got_it(
    store: tuple[SqlTranscriptStore, Member],
) -> None:
    """Times follow seqs: a message that waited while another worker held its room gets the
    time it got the room, not the time it started waiting."""
    transcripts, user = store
    room = await _room(transcripts, user)
    async with transcripts.engines.writer.begin() as other_worker:  # mid-commit, holding the room
        await other_worker.execute(select(rooms.c.id).where(rooms.c.id == room).with_for_update())
        waiting = asyncio.create_task(transcripts.append([NewEvent(room, EventKind.MESSAGE, user, {"text": "hi"})]))
        await asyncio.sleep(0.3)  # the other worker holds the room this long; the send waits meanwhile
        let_go = datetime.now(UTC)
    [event] = await waiting
    assert isinstance(event, Event) and event.ts >= let_go
