from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from fhirbots.engine.eventlog.port import (
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    OutgoingMessage,
    Record,
    RetryPolicy,
)
from fhirbots.engine.eventlog.processing import BatchProcessor, dead_letter_message


def record(offset: int, value: bytes = b"{}") -> Record:
    return Record("t", 2, offset, "k", value, (("trace", b"x"),), datetime.now(UTC))


def test_dead_letter_message_keeps_payload_and_adds_error() -> None:
    msg = dead_letter_message(record(7, b"garbage"), ValueError("bad json"))
    assert (msg.key, msg.value) == ("k", b"garbage")
    headers = dict(msg.headers)
    assert headers["trace"] == b"x"
    assert headers[HEADER_ERROR] == b"bad json"
    assert headers[HEADER_ERROR_TYPE] == b"ValueError"
    assert headers[HEADER_SOURCE_TOPIC] == b"t"
    assert headers[HEADER_SOURCE_PARTITION] == b"2"
    assert headers[HEADER_SOURCE_OFFSET] == b"7"


def test_backoff_doubles_up_to_ceiling() -> None:
    policy = RetryPolicy(initial_backoff=timedelta(seconds=1), max_backoff=timedelta(seconds=5))
    assert [policy.backoff(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]


async def test_poison_records_are_split_from_good_ones() -> None:
    handled: list[int] = []
    dead: list[tuple[str, list[OutgoingMessage]]] = []

    async def handler(batch: list[Record]) -> None:
        handled.extend(r.offset for r in batch)

    async def sink(topic: str, messages: Sequence[OutgoingMessage]) -> None:
        dead.append((topic, list(messages)))

    def validate(r: Record) -> None:
        if r.value == b"bad":
            raise ValueError("not JSON")

    processor = BatchProcessor(
        group="g",
        handler=handler,
        validate=validate,
        retry=RetryPolicy(),
        dead_letter=sink,
        stopping=asyncio.Event(),
    )
    assert await processor.process([record(0), record(1, b"bad"), record(2)])
    assert handled == [0, 2]
    assert [(t, [m.value for m in ms]) for t, ms in dead] == [("t.deadletter", [b"bad"])]
