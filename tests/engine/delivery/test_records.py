"""Delivery-attempt records: batched publishing, kept while the log refuses, bounded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from fhirbots.engine.delivery import records
from fhirbots.engine.delivery.attempt import AttemptResult
from fhirbots.engine.delivery.records import AttemptLog, attempt_record
from fhirbots.engine.delivery.store import Delivery
from fhirbots.engine.eventlog.errors import BrokerError
from fhirbots.engine.eventlog.port import OutgoingMessage
from fhirbots.schemas.deliveries import DeliveryAttemptRecord
from fhirbots.schemas.notifications import ChannelSpec, Notification


class FlakyLog:
    """Refuses publishes while ``down``; remembers what it took."""

    def __init__(self) -> None:
        self.down = False
        self.published: list[OutgoingMessage] = []

    async def create_topic(self, name: str) -> None:
        """Nothing to create."""

    async def publish_many(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[object]:
        if self.down:
            raise BrokerError("broker unavailable")
        self.published.extend(messages)
        return []


def delivery() -> Delivery:
    note = Notification(
        notification_id="n1",
        project="p1",
        subscription_id="s1",
        subscription_version="1",
        event_id="e1",
        interaction="create",
        resource_type="Patient",
        resource_id="x",
        version_id="1",
        channel=ChannelSpec(type="rest-hook", endpoint="https://example.org/h"),
        time=datetime.now(UTC),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    now = datetime.now(UTC)
    return Delivery(
        notification=note,
        event_number=7,
        state="pending",
        attempts=0,
        next_attempt_at=0.0,
        last_error=None,
        created_at=now,
        updated_at=now,
    )


def record(n: int = 1) -> DeliveryAttemptRecord:
    return attempt_record(
        delivery(),
        n,
        AttemptResult(False, 503, "down", 0.25, excerpt="x" * 900),
        "retry",
        "rest-hook",
    )


def test_a_record_says_what_the_attempt_did() -> None:
    made = record()
    assert (made.event_number, made.attempt, made.outcome, made.status) == (7, 1, "retry", 503)
    assert made.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert made.duration_ms == 250.0
    assert made.response_excerpt is not None and len(made.response_excerpt) == 512


async def test_records_are_kept_while_the_log_refuses_them() -> None:
    log = FlakyLog()
    attempts = AttemptLog(log)
    log.down = True
    attempts.add(record(1))
    with pytest.raises(BrokerError):
        await attempts.flush()
    log.down = False
    attempts.add(record(2))
    await attempts.flush()
    published = [DeliveryAttemptRecord.model_validate_json(m.value) for m in log.published]
    assert [r.attempt for r in published] == [1, 2]


async def test_at_most_max_pending_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "MAX_PENDING", 3)
    log = FlakyLog()
    attempts = AttemptLog(log)
    for n in range(1, 6):
        attempts.add(record(n))
    await attempts.flush()
    published = [DeliveryAttemptRecord.model_validate_json(m.value) for m in log.published]
    assert [r.attempt for r in published] == [3, 4, 5]
