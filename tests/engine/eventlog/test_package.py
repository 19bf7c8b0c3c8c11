from __future__ import annotations

import fhirbots.engine.eventlog as eventlog
from fhirbots.engine.eventlog import port


def test_public_surface() -> None:
    assert sorted(eventlog.__all__) == [
        "BrokerError",
        "ConsumerHandle",
        "ConsumerOptions",
        "EventLog",
        "EventLogClosed",
        "EventLogError",
        "Handler",
        "Headers",
        "InvalidTopic",
        "OutgoingMessage",
        "Record",
        "Retention",
        "RetryPolicy",
        "StartFrom",
        "TopicNotFound",
        "TopicSpec",
        "Validator",
        "create_event_log",
    ]
    for name in eventlog.__all__:
        assert getattr(eventlog, name) is not None
    for name in port.__all__:
        assert hasattr(port, name)


def test_errors_share_one_root() -> None:
    for error in (
        eventlog.BrokerError,
        eventlog.EventLogClosed,
        eventlog.InvalidTopic,
        eventlog.TopicNotFound,
    ):
        assert issubclass(error, eventlog.EventLogError)


def test_record_header_returns_last_value() -> None:
    from datetime import UTC, datetime

    record = eventlog.Record("t", 0, 0, "k", b"", (("a", b"1"), ("a", b"2")), datetime.now(UTC))
    assert record.header("a") == b"2"
    assert record.header("b") is None
