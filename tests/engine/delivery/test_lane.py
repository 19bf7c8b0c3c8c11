"""Lanes: order holds when the in-memory queue overflows and rows come back from the store."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from fhirbots.engine.delivery import lane
from tests.engine.scenarios.delivery import Harness, Receiver
from tests.waiting import eventually


async def test_overflow_reloads_from_store_in_order(
    harness: Harness, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lane, "QUEUE_LIMIT", 3)
    monkeypatch.setattr(lane, "PAGE", 4)
    gate = asyncio.Event()

    async def gated(_: web.Request, count: int) -> web.Response:
        if count == 1:
            await gate.wait()
        return web.Response(status=200)

    receiver.on("/o", gated)
    await harness.subscription("s1", receiver.url + "/o")
    await harness.start()
    await harness.publish(harness.notification("s1", receiver.url + "/o"))
    await receiver.wait_for("/o", 1)
    # While the first is stuck, 20 more arrive: far beyond the queue limit.
    for _ in range(20):
        await harness.publish(harness.notification("s1", receiver.url + "/o"))
    gate.set()
    got = await receiver.wait_for("/o", 21)
    assert [int(r.headers["X-Event-Number"]) for r in got] == list(range(1, 22))


async def test_requeued_dead_letter_is_delivered_while_lane_is_busy(
    harness: Harness, receiver: Receiver
) -> None:
    fail_first = True

    async def first_fails(_: web.Request, count: int) -> web.Response:
        return web.Response(status=500 if fail_first and count <= 4 else 200)

    receiver.on("/q", first_fails)
    await harness.subscription("s1", receiver.url + "/q")
    dispatcher = await harness.start()
    dead = harness.notification("s1", receiver.url + "/q")
    await harness.publish(dead)
    assert harness.store is not None

    async def is_dead() -> bool:
        assert harness.store is not None
        row = await harness.store.get("p1", dead.notification_id)
        return row is not None and row.state == "dead"

    await eventually(is_dead, "the first notification to be a dead letter")
    fail_first = False
    await harness.publish(*(harness.notification("s1", receiver.url + "/q") for _ in range(3)))
    assert await dispatcher.retry_dead_letters("p1", subscription_id="s1") == 1
    got = await receiver.wait_for("/q", 8)
    numbers = [r.headers["X-Event-Number"] for r in got[4:]]
    assert sorted(numbers) == ["1", "2", "3", "4"]
