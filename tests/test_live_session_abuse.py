"""A live session under attack by one of its own members: a lobby that must not tell on who
waited."""

from __future__ import annotations

from typing import Any

from tests.conftest import Account, Api, Client, Running, open_client


async def _group(api: Api, people: int) -> tuple[str, Account, list[Account]]:
    facilitator = await api.staff()
    room = await api.room(facilitator, kind="group", name="Thursday circle")
    members = [await api.signup() for _ in range(people)]
    for member in members:
        assert (await api.add_member(facilitator, room, member)).status_code == 201
    return room, facilitator, members


async def _connect(running: Running, clients: list[Client], account: Account) -> Client:
    client = await open_client(running, account)
    clients.append(client)
    return client


async def _session_event(client: Client, room: str, action: str, **match: Any) -> dict[str, Any]:
    while True:
        event = await client.event("session", room=room)
        if event["action"] == action and all(event.get(k) == v for k, v in match.items()):
            return event


async def _events_after(client: Client, room: str, after: int) -> list[dict[str, Any]]:
    """Every durable event of the room past `after` that `client` may see, oldest first."""
    found: list[dict[str, Any]] = []
    before = None
    while True:
        args: dict[str, Any] = {"room": room, "limit": 100}
        if before is not None:
            args["before"] = before
        page = (await client.call("history", **args))["events"]
        found[:0] = [e for e in page if e["seq"] > after]
        if not page or page[0]["seq"] <= after:
            return found
        before = page[0]["seq"]


async def test_who_left_the_lobby_is_told_to_the_facilitators_alone(
    server: Running, api: Api, clients: list[Client]
) -> None:
    """`left_lobby` reaches the facilitators and the user, never the members in the session
    nor the others waiting."""
    room, fac, (inside, waiting, leaver) = await _group(api, 3)
    cf, ci = await _connect(server, clients, fac), await _connect(server, clients, inside)
    for c in (cf, ci):
        await c.call("join", room=room)
    opened = await cf.call("session", room=room, action="open", title="Circle")
    cw, cl = [await _connect(server, clients, a) for a in (waiting, leaver)]
    for c, account in ((cw, waiting), (cl, leaver)):
        assert (await c.call("join", room=room))["waiting"] is True
        await _session_event(cf, room, "waiting", user=account.id)
    await cl.call("leave", room=room)
    assert (await _session_event(cf, room, "left_lobby"))["user"] == leaver.id
    await cf.call("session", room=room, action="pin", kind="agenda", text="Check-in first.")
    for c in (ci, cw):  # the pin is the first thing they hear of after the opening
        while (event := await c.event("session", room=room))["action"] in ("opened", "waiting"):
            pass
        assert event["action"] == "pinned", event
    seen = await _events_after(ci, room, opened["seq"])
    assert [e["action"] for e in seen if e.get("user") == leaver.id] == []
