"""The transcript's write path: a batch of new events committed with each room's next seqs.

Two implementations of one rule (`_place` decides what a batch stores, for both): on
PostgreSQL, a batch without targets is one statement in autocommit (`append_at_once`) and
one with edits, deletions or reactions a transaction under its rooms' row locks
(`append_locked`); on SQLite, the whole transaction runs on the writer's thread on sqlite3
itself (`append_sqlite`), BEGIN IMMEDIATE serialising the writers.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Sequence
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Row,
    String,
    and_,
    any_,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from rooms.clock import from_us, now_us
from rooms.errors import Conflict, HearthError, NotFound
from rooms.model import Event, EventKind, NewEvent, RoomId, Seq
from server.store.tables import events, rooms


def row_event(row: Row[Any]) -> Event:
    return Event(
        room=RoomId(row.room_id),
        seq=Seq(row.seq),
        ts=from_us(row.ts),
        kind=EventKind(row.kind),
        sender={"id": row.sender_id, "name": row.sender_name, "role": row.sender_role},
        body=orjson.loads(row.body),
        client_id=row.client_id,
        target=row.target,
    )


Key = tuple[str, str, str | None]  # an event's (room, sender, client_id): unique when client_id is set
_KEY_CONSTRAINT = "uq_events_room_id_sender_id_client_id"


def repeated_key(exc: IntegrityError | sqlite3.IntegrityError) -> bool:
    """Whether an insert failed on the (room, sender, client_id) key: a resend, which the
    probe then finds. PostgreSQL names the constraint; SQLite names its columns."""
    message = str(exc.orig if isinstance(exc, IntegrityError) else exc)
    return _KEY_CONSTRAINT in message or "events.room_id, events.sender_id, events.client_id" in message


def _row(new: NewEvent, seq: int, ts: int) -> dict[str, Any]:
    return {
        "room_id": new.room,
        "seq": seq,
        "kind": new.kind.value,
        "sender_id": new.sender.id,
        "sender_name": new.sender.name,
        "sender_role": new.sender.role.value,
        "client_id": new.client_id,
        "target": new.target,
        "ts": ts,
        "body": orjson.dumps(new.body).decode(),
        "redacted": False,
    }


def _arrays(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows as one array per column: the parameters of `_ROWS` (PostgreSQL)."""
    return {f"e_{c.name}": [row[c.name] for row in rows] for c in events.c}


def _event(new: NewEvent, seq: int, ts: int) -> Event:
    return Event(new.room, Seq(seq), from_us(ts), new.kind, new.sender.public(), new.body, new.client_id, new.target)


_Placed = tuple[list[Event | HearthError], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]


def _place(
    batch: Sequence[NewEvent],
    last: dict[str, int],
    known: dict[Key, Event],
    targets: dict[Any, dict[str, Any]],
    ts: int,
) -> _Placed:
    """What a batch stores, given what its transaction found: each room's counter (`last`,
    moved on here), the events already stored under the batch's keys (`known`) and the
    messages its edits, deletions and reactions act on (`targets`). Returns each event's
    result, the rows to insert, and the message rows to rewrite for edits and deletions."""
    results: list[Event | HearthError] = []
    rows: list[dict[str, Any]] = []
    edits: list[dict[str, Any]] = []
    deletes: list[dict[str, Any]] = []
    for new in batch:
        key = (new.room, new.sender.id, new.client_id)
        if new.room not in last:
            results.append(NotFound("There is no such room."))
            continue
        if new.client_id is not None and key in known:
            repeat = known[key]
            same = repeat.kind is new.kind and repeat.target == new.target
            results.append(repeat if same else Conflict("This client_id was already used for another event."))
            continue
        if new.target is not None:
            target = targets.get((new.room, new.target))
            if target is None or target["kind"] != EventKind.MESSAGE or target["redacted"]:
                results.append(NotFound("There is no such message."))
                continue
        seq = last[new.room] = last[new.room] + 1
        event = _event(new, seq, ts)
        results.append(event)
        if new.client_id is not None:
            known[key] = event
        rows.append(_row(new, seq, ts))
        if new.kind is EventKind.MESSAGE:
            targets[(new.room, seq)] = {"kind": EventKind.MESSAGE, "redacted": False, "body": dict(new.body)}
        elif new.kind is EventKind.EDIT:
            target = targets[(new.room, new.target)]
            target["body"] = {**target["body"], "text": new.body["text"], "edited": True, "edit_seq": seq}
            edits.append({"r": new.room, "s": new.target, "b": orjson.dumps(target["body"]).decode()})
        elif new.kind is EventKind.DELETE:
            target = targets[(new.room, new.target)]
            target["redacted"] = True
            kept = {k: v for k, v in target["body"].items() if k == "reply_to"}  # drops text and edits
            kept["deleted"] = True
            if new.body.get("redacted"):
                kept["redacted"] = True
            deletes.append({"r": new.room, "s": new.target, "b": orjson.dumps(kept).decode()})
    return results, rows, edits, deletes


# The commit path's statements are built once. SQLAlchemy caches a statement's compiled SQL,
# but it walks a statement object for its cache key on every execution unless the same
# object is used again (its key is then memoised).
_LOCK_ROOMS = (
    select(rooms.c.id, rooms.c.last_seq)
    .where(rooms.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(rooms.c.id)
    .with_for_update()
)
# On PostgreSQL events are stamped by the database's clock, taken once the rooms are locked:
# a room's times then follow its seqs whichever worker (and whichever host's clock) commits.
_CLOCK = cast(func.extract("epoch", func.clock_timestamp()) * literal_column("1000000"), BigInteger)
_NOW = select(_CLOCK)

# PostgreSQL takes a batch as one array per column, so one statement does for any batch:
# with 100 events, the insert took 3.5 ms as executemany (one INSERT per row), and the
# idempotency probe 22 ms as an OR of 128 ANDs (planning included) against 1.8 ms as a join.
_ROWS = (
    func.unnest(*(bindparam(f"e_{c.name}", type_=ARRAY(c.type)) for c in events.c))
    .table_valued(*(c.name for c in events.c))
    .render_derived()
)
_ROOM_IDS = bindparam("lr", type_=ARRAY(String))
_LAST = func.unnest(_ROOM_IDS, bindparam("ls", type_=ARRAY(BigInteger))).table_valued("r", "s").render_derived()
# The rows and the rooms' new counters in one statement: one round trip fewer under the lock.
_COMMIT_ARRAYS = (
    update(rooms)
    .where(rooms.c.id == _LAST.c.r)
    .values(last_seq=_LAST.c.s)
    .add_cte(events.insert().from_select([c.name for c in events.c], select(*_ROWS.c)).cte("added"))
)
# A batch without edits, deletions or reactions as one statement, run in autocommit: it
# locks the rooms in id order, takes the time once they are all locked (so a room's times
# follow its seqs whichever worker commits), inserts each row at its room's counter plus the
# row's place in the room (the `seq` array holds that place), moves the counters on and
# returns them with the time. The rooms stay locked for that statement and its commit
# alone, with no round trip in between. A room that does not exist locks nothing, stores
# nothing and returns no row. `locked` must be computed once: it is MATERIALIZED.
_LOCKED = (
    select(rooms.c.id, rooms.c.last_seq)
    .where(rooms.c.id == any_(_ROOM_IDS))
    .order_by(rooms.c.id)
    .with_for_update()
    .cte("locked")
    .prefix_with("MATERIALIZED")
)
_ALL_LOCKED = select(func.count()).select_from(_LOCKED).subquery()  # read to its end before the clock
_STAMP = select(_CLOCK.label("ts")).select_from(_ALL_LOCKED).cte("stamp")
_STAMPED = {"seq": (_LOCKED.c.last_seq + _ROWS.c.seq).label("seq"), "ts": _STAMP.c.ts.label("ts")}
_PLACED = [_STAMPED.get(c.name, _ROWS.c[c.name]) for c in events.c]
_COUNTS = func.unnest(_ROOM_IDS, bindparam("ln", type_=ARRAY(BigInteger))).table_valued("id", "n").render_derived()
_MOVED = (
    update(rooms)
    .where(rooms.c.id == _LOCKED.c.id, _COUNTS.c.id == _LOCKED.c.id)
    .values(last_seq=_LOCKED.c.last_seq + _COUNTS.c.n)
    .returning(rooms.c.id, rooms.c.last_seq)
    .cte("moved")
)
_AT_ONCE = (
    select(_MOVED.c.id, _MOVED.c.last_seq, _STAMP.c.ts)
    .join_from(_MOVED, _STAMP, true())
    .add_cte(
        events.insert()
        .from_select(
            [c.name for c in events.c],
            select(*_PLACED).join_from(_ROWS, _LOCKED, _LOCKED.c.id == _ROWS.c.room_id).join(_STAMP, true()),
        )
        .cte("added")
    )
)
_KEYS = func.unnest(*(bindparam(n, type_=ARRAY(String)) for n in "ruc")).table_valued("r", "u", "c").render_derived()
# Each key is looked up on its own (a lateral subquery with LIMIT is never flattened into a
# join): as a plain join, a table whose statistics lagged its growth was hashed whole (4-13
# ms a commit at 40,000-60,000 rows); this way the choice is the unique index, or a scan of
# a table too small to matter. The key is unique, so LIMIT 1 loses nothing.
_FOUND = (
    select(events)
    .where(events.c.room_id == _KEYS.c.r, events.c.sender_id == _KEYS.c.u, events.c.client_id == _KEYS.c.c)
    .limit(1)
    .lateral()
)
_PROBE_ARRAYS = select(_FOUND).select_from(_KEYS).join(_FOUND, true())


# SQLite's commit runs whole on the writer's thread (`SqliteWriter`), on sqlite3 itself: a
# statement there costs microseconds, where through aiosqlite and SQLAlchemy each was a
# round trip to that thread and back.
_COLUMNS = [c.name for c in events.c]
_SQLITE_INSERT = f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({', '.join(':' + c for c in _COLUMNS)})"
_SQLITE_EDITED = "UPDATE events SET body = :b WHERE room_id = :r AND seq = :s"
_SQLITE_DELETED = "UPDATE events SET body = :b, redacted = 1 WHERE room_id = :r AND seq = :s"
_SQLITE_EDITS_DELETED = (
    "UPDATE events SET body = '{\"deleted\":true}', redacted = 1 WHERE room_id = :r AND kind = 'edit' AND target = :s"
)
_SQLITE_BY_KEY = f"SELECT {', '.join(_COLUMNS)} FROM events WHERE room_id = ? AND sender_id = ? AND client_id = ?"


@cache
def _record(fields: tuple[str, ...]) -> Any:
    return namedtuple("Record", fields)


def _records(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Any:
    """sqlite3's rows with attributes by column name, as SQLAlchemy's rows have."""
    return _record(tuple(d[0] for d in cursor.description))(*values)


def append_sqlite(batch: Sequence[NewEvent], probe: bool, conn: sqlite3.Connection) -> list[Event | HearthError]:
    """`SqlTranscriptStore.append` on SQLite, inside the writer's BEGIN IMMEDIATE: no other
    writer runs until its COMMIT, so the rooms' counters are read and moved with nothing in
    between. Without `probe`, keys are not looked up first: one that is already stored fails
    the insert (IntegrityError)."""
    cur = conn.cursor()
    cur.row_factory = _records
    last: dict[str, int] = {}
    for room in sorted({new.room for new in batch}):
        found = cur.execute("SELECT last_seq FROM rooms WHERE id = ?", (room,)).fetchone()
        if found is not None:
            last[room] = found.last_seq
    known: dict[Key, Event] = {}
    for key in {(new.room, new.sender.id, new.client_id) for new in batch if probe and new.client_id is not None}:
        if (row := cur.execute(_SQLITE_BY_KEY, key).fetchone()) is not None:
            known[key] = row_event(row)
    targets: dict[Any, dict[str, Any]] = {}
    for room, seq in {(new.room, new.target) for new in batch if new.target is not None}:
        query = "SELECT kind, redacted, body FROM events WHERE room_id = ? AND seq = ?"
        if (row := cur.execute(query, (room, seq)).fetchone()) is not None:
            targets[(room, seq)] = {"kind": row.kind, "redacted": row.redacted, "body": orjson.loads(row.body)}
    results, rows, edits, deletes = _place(batch, last, known, targets, now_us())
    if rows:
        cur.executemany(_SQLITE_INSERT, rows)
        cur.executemany("UPDATE rooms SET last_seq = ? WHERE id = ?", [(s, r) for r, s in last.items()])
    # Each message row as it now stands; a deletion also erases the text of its edits.
    cur.executemany(_SQLITE_EDITED, edits)
    cur.executemany(_SQLITE_DELETED, deletes)
    cur.executemany(_SQLITE_EDITS_DELETED, [{"r": d["r"], "s": d["s"]} for d in deletes])
    return results


async def append_at_once(conn: AsyncConnection, batch: Sequence[NewEvent]) -> list[Event | HearthError]:
    """A batch with no targets: one statement (`_AT_ONCE`). A key that is
    already stored fails it on the unique index (IntegrityError) and stores nothing."""
    counts: dict[str, int] = {}
    places: list[int | None] = []  # each event's place in its room; None: a repeat in the batch
    firsts: dict[Key, int] = {}  # each key's first event in the batch
    rows: list[dict[str, Any]] = []
    for i, new in enumerate(batch):
        if new.client_id is not None:
            key = (new.room, new.sender.id, new.client_id)
            if key in firsts:
                places.append(None)
                continue
            firsts[key] = i
        place = counts[new.room] = counts.get(new.room, 0) + 1
        places.append(place)
        rows.append(_row(new, place, 0))  # (the statement stamps the time)
    result = await conn.execute(_AT_ONCE, {**_arrays(rows), "lr": list(counts), "ln": list(counts.values())})
    last: dict[str, int] = {}
    ts = 0
    for r in result:
        last[r.id], ts = r.last_seq, r.ts
    results: list[Event | HearthError] = []
    for new, at in zip(batch, places, strict=True):
        if at is None:
            first = results[firsts[(new.room, new.sender.id, new.client_id)]]
            same = not isinstance(first, Event) or first.kind is new.kind
            results.append(first if same else Conflict("This client_id was already used for another event."))
        elif new.room not in last:
            results.append(NotFound("There is no such room."))
        else:
            results.append(_event(new, last[new.room] - counts[new.room] + at, ts))
    return results


async def append_locked(conn: AsyncConnection, batch: Sequence[NewEvent], *, probe: bool) -> list[Event | HearthError]:
    """The batch in one transaction, under its rooms' locks (PostgreSQL). Without `probe`,
    keys are not looked up first: one that is already stored fails the insert
    (IntegrityError)."""
    locked = await conn.execute(_LOCK_ROOMS, {"ids": sorted({e.room for e in batch})})
    last: dict[str, int] = {r.id: r.last_seq for r in locked}
    known: dict[Key, Event] = await _repeats(conn, batch) if probe else {}
    targets = await _targets(conn, batch)
    ts: int = (await conn.execute(_NOW)).scalar_one()
    results, rows, edits, deletes = _place(batch, last, known, targets, ts)
    if rows:
        await conn.execute(_COMMIT_ARRAYS, {**_arrays(rows), "lr": list(last), "ls": list(last.values())})
    await _materialise(conn, edits, deletes)
    return results


async def _repeats(conn: AsyncConnection, batch: Sequence[NewEvent]) -> dict[Key, Event]:
    """Events already stored under the batch's (room, sender, client_id) keys: queries on
    the unique index, whose three columns they name (a room's size does not matter)."""
    keys = sorted({(new.room, new.sender.id, new.client_id) for new in batch if new.client_id is not None})
    found: dict[Key, Event] = {}
    if keys:
        r, u, c = (list(column) for column in zip(*keys, strict=True))
        for row in await conn.execute(_PROBE_ARRAYS, {"r": r, "u": u, "c": c}):
            found[(row.room_id, row.sender_id, row.client_id)] = row_event(row)
    return found


async def _targets(conn: AsyncConnection, batch: Sequence[NewEvent]) -> dict[Any, dict[str, Any]]:
    """The messages the batch's edits, deletions and reactions act on."""
    by_room: dict[str, set[int]] = {}
    for new in batch:
        if new.target is not None:
            by_room.setdefault(new.room, set()).add(new.target)
    found: dict[Any, dict[str, Any]] = {}
    for room, seqs in by_room.items():
        query = select(events.c.seq, events.c.kind, events.c.redacted, events.c.body).where(
            events.c.room_id == room, events.c.seq.in_(sorted(seqs))
        )
        for row in await conn.execute(query):
            found[(room, row.seq)] = {"kind": row.kind, "redacted": row.redacted, "body": orjson.loads(row.body)}
    return found


async def _materialise(conn: AsyncConnection, edits: list[dict[str, Any]], deletes: list[dict[str, Any]]) -> None:
    """Keep each message row as it now stands; a deletion also erases the text of its edits."""
    at = and_(events.c.room_id == bindparam("r"), events.c.seq == bindparam("s"))
    if edits:
        await conn.execute(update(events).where(at).values(body=bindparam("b")), edits)
    if deletes:
        await conn.execute(update(events).where(at).values(body=bindparam("b"), redacted=True), deletes)
        edits_of = and_(events.c.room_id == bindparam("r"), events.c.kind == "edit", events.c.target == bindparam("s"))
        await conn.execute(
            update(events).where(edits_of).values(body='{"deleted":true}', redacted=True),
            [{"r": d["r"], "s": d["s"]} for d in deletes],
        )
