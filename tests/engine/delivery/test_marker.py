"""Write-behind delivered marks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from fhirbots.engine.delivery.errors import DeliveryStoreError
from fhirbots.engine.delivery.marker import DeliveredMarker
from fhirbots.engine.delivery.store_sqlite import SqliteDeliveryStore
from tests.engine.delivery.test_store import _note


async def test_marks_are_grouped_and_flush_waits(tmp_path: Path) -> None:
    store = SqliteDeliveryStore(tmp_path / "d.db")
    await store.open()
    calls: list[int] = []
    original = store.mark_delivered

    async def counting(delivered: Sequence[tuple[str, int]]) -> None:
        calls.append(len(delivered))
        await original(delivered)

    store.mark_delivered = counting  # type: ignore[method-assign]
    await store.accept([_note("a", i) for i in range(1, 51)])
    marker = DeliveredMarker(store)
    marker.start()
    for i in range(1, 51):
        marker.add(f"p1:a:{i}", 1)
    await marker.flush()
    assert sum(calls) == 50 and len(calls) < 50
    assert await store.pending("p1", "a") == []
    await marker.stop()
    await store.close()


async def test_failed_commit_keeps_marks(tmp_path: Path) -> None:
    store = SqliteDeliveryStore(tmp_path / "d.db")
    await store.open()
    await store.accept([_note("a", 1)])
    marker = DeliveredMarker(store)
    original = store.mark_delivered
    failures = [DeliveryStoreError("disk full")]

    async def flaky(delivered: Sequence[tuple[str, int]]) -> None:
        if failures:
            raise failures.pop()
        await original(delivered)

    store.mark_delivered = flaky  # type: ignore[method-assign]
    marker.add("p1:a:1", 2)
    with pytest.raises(DeliveryStoreError):
        await marker.flush()  # not started: flushes inline and reports the failure
    await marker.flush()
    row = await store.get("p1", "p1:a:1")
    assert row is not None and row.state == "delivered" and row.attempts == 2
    await store.close()
