"""The Broker contract: what every backend promises the room feeds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from rooms.model import RoomId
from server.broker import Backend
from tests.conftest import TIMEOUT

ROOM, OTHER = RoomId("r_contract"), RoomId("r_other")


async def take(messages: AsyncIterator[bytes], count: int) -> list[bytes]:
    got = []
    async with asyncio.timeout(TIMEOUT):
        async for message in messages:
            got.append(message)
            if len(got) == count:
                break
    return got


async def test_a_publish_after_subscribe_returns_is_received(broker: Backend) -> None:
    """`subscribe` returns once confirmed: a publish made right after is seen."""
    async with broker.subscribe(ROOM) as messages:
        await broker.publish([(ROOM, b"hello")])
        assert await take(messages, 1) == [b"hello"]


async def test_publishes_from_one_publisher_arrive_in_order(broker: Backend) -> None:
    """1,000 publishes arrive once each, in the order they were made."""
    async with broker.subscribe(ROOM) as messages:
        for i in range(1000):
            await broker.publish([(ROOM, str(i).encode())])
        assert await take(messages, 1000) == [str(i).encode() for i in range(1000)]


async def test_one_publish_of_many_events_keeps_their_order_in_each_room(broker: Backend) -> None:
    """A batch across two rooms (a group commit's events) arrives in order, each in its room."""
    async with broker.subscribe(ROOM) as one, broker.subscribe(OTHER) as other:
        await broker.publish([(ROOM if i % 3 else OTHER, str(i).encode()) for i in range(300)])
        assert await take(one, 200) == [str(i).encode() for i in range(300) if i % 3]
        assert await take(other, 100) == [str(i).encode() for i in range(300) if not i % 3]


async def test_every_subscriber_of_a_room_gets_each_event_and_rooms_stay_apart(broker: Backend) -> None:
    """Two subscribers of one room both get its events; a subscriber of another room gets none."""
    async with broker.subscribe(ROOM) as one, broker.subscribe(ROOM) as two, broker.subscribe(OTHER) as other:
        await broker.publish([(ROOM, b"a")])
        await broker.publish([(OTHER, b"b")])
        assert await take(one, 1) == [b"a"]
        assert await take(two, 1) == [b"a"]
        assert await take(other, 1) == [b"b"]


async def test_a_subscriber_that_left_gets_nothing_more_and_the_others_go_on(broker: Backend) -> None:
    """Leaving one subscription does not end the room's other subscriptions."""
    async with broker.subscribe(ROOM) as staying:
        async with broker.subscribe(ROOM) as leaving:
            await broker.publish([(ROOM, b"1")])
            assert await take(leaving, 1) == [b"1"]
        await broker.publish([(ROOM, b"2")])
        assert await take(staying, 2) == [b"1", b"2"]


async def test_binary_payloads_pass_unchanged(broker: Backend) -> None:
    """Events are opaque bytes: every byte value survives."""
    payload = bytes(range(256)) * 4
    async with broker.subscribe(ROOM) as messages:
        await broker.publish([(ROOM, payload)])
        assert await take(messages, 1) == [payload]


async def test_subscribing_again_after_leaving_works(broker: Backend) -> None:
    """A room can be left (unsubscribed upstream) and subscribed again."""
    for round_ in range(3):
        async with broker.subscribe(ROOM) as messages:
            await broker.publish([(ROOM, f"{round_}".encode())])
            assert await take(messages, 1) == [f"{round_}".encode()]
