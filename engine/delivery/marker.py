"""Write-behind of delivered marks: one transaction for every mark made meanwhile.

A lane does not wait for its delivered mark to be durable before sending the next
notification; marks are grouped and committed by one background task (group commit), so a
subscription's throughput is not bounded by the disk's sync latency. A crash before the commit
only means those notifications are delivered again (at-least-once; receivers deduplicate by
``X-Notification-Id``). Anyone about to read pending rows, or to change a subscription's dead
streak, first awaits :meth:`DeliveredMarker.flush`.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from fhirbots.engine.delivery.errors import DeliveryError
from fhirbots.engine.delivery.store import DeliveryStore

__all__ = ["DeliveredMarker"]

RETRY_SECONDS = 0.5
"""Pause before retrying a failed commit of marks (the marks are kept)."""

_log = structlog.get_logger("fhirbots.engine.delivery")


class DeliveredMarker:
    """Groups ``mark_delivered`` calls into few transactions.

    Args:
        store: The delivery store.
    """

    def __init__(self, store: DeliveryStore) -> None:
        self._store = store
        self._buffer: list[tuple[str, int]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run the committing task."""
        self._task = asyncio.create_task(self._run(), name="delivery-marker")

    async def stop(self) -> None:
        """Commit what is buffered and stop."""
        if self._task is None:
            return
        with contextlib.suppress(DeliveryError):
            await self._commit()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def add(self, notification_id: str, attempts: int) -> None:
        """Record a delivery (committed soon, without waiting)."""
        self._buffer.append((notification_id, attempts))
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until every mark added so far is committed."""
        if self._task is None:
            await self._commit()
            return
        while self._buffer or not self._idle.is_set():
            self._wake.set()
            await self._idle.wait()

    async def _commit(self) -> None:
        batch, self._buffer = self._buffer, []
        if not batch:
            return
        try:
            await self._store.mark_delivered(batch)
        except BaseException:
            self._buffer[:0] = batch
            raise

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._commit()
            except DeliveryError as exc:
                _log.warning("delivered marks not committed, retrying", error=str(exc))
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()
                continue
            if not self._buffer:
                self._idle.set()
