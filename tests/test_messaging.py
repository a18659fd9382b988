"""Every core command and event, as a member of a room sees them, in both encodings."""

from __future__ import annotations

import re

from tests.conftest import Api, Client, Running, open_client

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def _room_with(server: Running, api: Api, clients: list[Client], encoding: str, n: int = 2):
    staff = await api.staff()
    room = await api.room(staff, name="Tuesday drop-in")
    accounts = [await api.signup("caregiver") for _ in range(n)]
    opened = [await open_client(server, a, encoding) for a in accounts]
    clients += opened
    for c in opened:
        await c.call("join", room=room)
    return room, accounts, opened


async def test_auth_reply_names_the_user_and_the_heartbeat(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """`auth` answers with the user's public card and the server's ping interval."""
    account = await api.signup("caregiver", name="Rosa")
    client = await open_client(server, None, encoding)
    clients.append(client)
    result = await client.call("auth", token=account.token)
    assert result == {"user": {"id": account.id, "name": "Rosa", "role": "caregiver"}, "heartbeat": 20.0}


async def test_ping_answers_with_a_server_timestamp(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """`ping` returns the server time in ISO 8601 UTC."""
    client = await open_client(server, await api.signup(), encoding)
    clients.append(client)
    assert ISO.fullmatch((await client.call("ping"))["ts"])


async def test_join_reply_lists_room_seq_and_presence_once_per_user(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """A user on two devices appears once in presence; the room card and latest seq come back."""
    staff = await api.staff()
    room = await api.room(staff, name="Night owls")
    sam = await api.signup("caregiver", name="Sam")
    phone, laptop = await open_client(server, sam, encoding), await open_client(server, sam, encoding)
    clients += [phone, laptop]
    await phone.call("join", room=room)
    sent = await phone.call("send", room=room, text="anyone here?", client_id="p1")
    joined = await laptop.call("join", room=room)
    assert joined["room"] == {"id": room, "name": "Night owls", "kind": "drop_in", "community": await api.community()}
    assert joined["seq"] == sent["seq"]
    assert joined["presence"] == [{"id": sam.member, "name": "Sam", "role": "caregiver"}]
    assert joined["member"] == joined["presence"][0]  # who they are here: their member card
    assert joined["events"] == [] and joined["recovered"] is True


async def test_presence_events_tell_the_others_who_came_and_went(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """Others see `presence` joined when a user arrives and left when their last device leaves."""
    room, (a, b), (ca, cb) = await _room_with(server, api, clients, encoding)
    arrived = await ca.event("presence", room=room)
    assert arrived["joined"] == [{"id": b.member, "name": b.name, "role": "caregiver"}] and arrived["left"] == []
    second = await open_client(server, b, encoding)
    await second.call("join", room=room)
    await second.call("leave", room=room)  # b still has another device in the room
    await second.close()
    assert await cb.call("leave", room=room) == {}
    left = await ca.event("presence", room=room)
    assert left["left"] == [{"id": b.member, "name": b.name, "role": "caregiver"}] and left["joined"] == []
    assert (await ca.call("join", room=room))["presence"] == [{"id": a.member, "name": a.name, "role": "caregiver"}]


async def test_disconnect_counts_as_leaving(server: Running, api: Api, clients: list[Client], encoding: str) -> None:
    """Closing the socket removes the user from presence at once."""
    room, (_, b), (ca, cb) = await _room_with(server, api, clients, encoding)
    await ca.event("presence", room=room)
    await cb.close()
    left = await ca.event("presence", room=room)
    assert [u["id"] for u in left["left"]] == [b.member]


async def test_message_event_carries_the_whole_envelope(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """Everyone, the sender included, gets the message with seq, ts, from, text, client_id, reply_to."""
    room, (a, _), (ca, cb) = await _room_with(server, api, clients, encoding)
    first = await ca.call("send", room=room, text="Thank you all.", client_id="c-5f1e")
    assert set(first) == {"seq", "ts"} and ISO.fullmatch(first["ts"])
    reply = await cb.call("send", room=room, text="Likewise 💛", client_id="c-2", reply_to=first["seq"])
    for client in (ca, cb):
        m1, m2 = await client.messages(room, 2)
        assert m1 == {
            "ev": "message",
            "room": room,
            "seq": first["seq"],
            "ts": first["ts"],
            "from": {"id": a.member, "name": a.name, "role": "caregiver"},
            "text": "Thank you all.",
            "client_id": "c-5f1e",
        }
        assert m2["seq"] == reply["seq"] == first["seq"] + 1
        assert m2["reply_to"] == first["seq"] and m2["text"] == "Likewise 💛"


async def test_typing_reaches_the_others_but_not_the_typist(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """`typing` sends the others an ephemeral event without seq; the typist gets none back."""
    room, (a, _), (ca, cb) = await _room_with(server, api, clients, encoding)
    assert await ca.call("typing", room=room) == {}
    event = await cb.event("typing", room=room)
    assert event == {"ev": "typing", "room": room, "user": {"id": a.member, "name": a.name, "role": "caregiver"}}
    await ca.call("send", room=room, text="here", client_id="t1")
    seen = []
    while not seen or seen[-1].get("ev") != "message":
        seen.append(await ca.event(room=room))
    assert [e["ev"] for e in seen if e["ev"] == "typing"] == []


async def test_edit_delete_and_react_are_durable_events(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """Edits, reactions and deletions get their own seq and reach everyone in order."""
    room, (a, b), (ca, cb) = await _room_with(server, api, clients, encoding)
    sent = await ca.call("send", room=room, text="I feel awful today", client_id="m1")
    edited = await ca.call("edit", room=room, target=sent["seq"], text="I feel tired today")
    reacted = await cb.call("react", room=room, target=sent["seq"], emoji="🙏")
    unreacted = await cb.call("react", room=room, target=sent["seq"], emoji="🙏", remove=True)
    deleted = await ca.call("delete", room=room, target=sent["seq"])
    assert [edited["seq"], reacted["seq"], unreacted["seq"], deleted["seq"]] == [sent["seq"] + i for i in range(1, 5)]
    events = await cb.messages(room, 5)
    assert [e["ev"] for e in events] == ["message", "edit", "reaction", "reaction", "delete"]
    assert events[1]["target"] == sent["seq"] and events[1]["text"] == "I feel tired today"
    assert events[2]["emoji"] == "🙏" and events[2]["remove"] is False and events[2]["from"]["id"] == b.member
    assert events[3]["remove"] is True
    assert events[4]["target"] == sent["seq"] and "text" not in events[4]


async def test_history_shows_messages_as_they_now_stand(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """History returns the edited text, and no text at all for a deleted message or its edits."""
    room, _, (ca, _) = await _room_with(server, api, clients, encoding)
    kept = await ca.call("send", room=room, text="first draft", client_id="k")
    gone = await ca.call("send", room=room, text="something I regret", client_id="g")
    final = await ca.call("edit", room=room, target=kept["seq"], text="final words")
    await ca.call("edit", room=room, target=gone["seq"], text="still regret it")
    await ca.call("delete", room=room, target=gone["seq"])
    events = (await ca.call("history", room=room))["events"]
    by_seq = {e["seq"]: e for e in events}
    assert by_seq[kept["seq"]]["text"] == "final words" and by_seq[kept["seq"]]["edited"] is True
    assert by_seq[kept["seq"]]["edit_seq"] == final["seq"]  # which edit the text already reflects
    assert by_seq[gone["seq"]]["deleted"] is True and "text" not in by_seq[gone["seq"]]
    assert all("regret" not in str(e) for e in events)


async def test_history_pages_backwards_oldest_first(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """`history` with `before` and `limit` walks back through the room, each page oldest first."""
    room, _, (ca, _) = await _room_with(server, api, clients, encoding)
    seqs = [(await ca.call("send", room=room, text=f"m{i}", client_id=f"h{i}"))["seq"] for i in range(25)]
    page = (await ca.call("history", room=room, limit=10))["events"]
    assert [e["seq"] for e in page] == seqs[-10:]
    older = (await ca.call("history", room=room, before=page[0]["seq"], limit=10))["events"]
    assert [e["seq"] for e in older] == seqs[-20:-10]
    assert [e["text"] for e in older] == [f"m{i}" for i in range(5, 15)]
    default = (await ca.call("history", room=room))["events"]
    assert [e["seq"] for e in default][-25:] == seqs


async def test_leave_stops_the_events(server: Running, api: Api, clients: list[Client], encoding: str) -> None:
    """After `leave`, no event of the room arrives live, and sending there is refused."""
    room, _, (ca, cb) = await _room_with(server, api, clients, encoding)
    before = await ca.call("send", room=room, text="before you left", client_id="w")
    await cb.messages(room, 1)
    await cb.call("leave", room=room)
    missed = await ca.call("send", room=room, text="after you left", client_id="x")
    assert (await cb.error("send", room=room, text="hi", client_id="y"))["code"] == "forbidden"
    rejoined = await cb.call("join", room=room, since=before["seq"])
    assert [e["seq"] for e in rejoined["events"]] == [missed["seq"]]
    later = await ca.call("send", room=room, text="welcome back", client_id="z")
    assert [e["seq"] for e in await cb.messages(room, 1)] == [later["seq"]]


async def test_a_failed_rejoin_leaves_the_connection_joined_and_served(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """A join again with a bad `since` is refused, and the connection keeps getting the room's events."""
    room, _, (ca, cb) = await _room_with(server, api, clients, encoding)
    assert (await ca.error("join", room=room, since=10**6))["code"] == "bad_request"
    sent = await cb.call("send", room=room, text="still with us?", client_id="s")
    assert [e["seq"] for e in await ca.messages(room, 1)] == [sent["seq"]]
