"""A first conversation."""

from tests.conftest import Api, Client, Running, open_client


async def test_two_people_talk_in_a_drop_in_room(
    server: Running, api: Api, clients: list[Client], encoding: str
) -> None:
    """Two caregivers join a drop-in room; each sees the other's message with its seq."""
    staff = await api.staff()
    room = await api.room(staff)
    a, b = await api.signup("caregiver"), await api.signup("caregiver")
    ca = await open_client(server, a, encoding)
    cb = await open_client(server, b, encoding)
    clients += [ca, cb]
    joined = await ca.call("join", room=room)
    assert joined["room"]["kind"] == "drop_in"
    await cb.call("join", room=room)
    sent = await ca.call("send", room=room, text="Hello", client_id="c1")
    got = await cb.event("message", room=room)
    assert got["seq"] == sent["seq"] and got["text"] == "Hello" and got["from"]["id"] == a.member
