"""The event log: a partitioned, durable message log with consumer groups.

The port (:mod:`fhirbots.engine.eventlog.port`) has two adapters: the embedded SQLite log
(:mod:`fhirbots.engine.eventlog.embedded`) and Apache Kafka (:mod:`fhirbots.engine.eventlog.kafka`);
:func:`create_event_log` picks one. Kafka-side stream processing runs in
:mod:`fhirbots.engine.eventlog.faust_app`.
"""

from __future__ import annotations

from fhirbots.engine.eventlog.errors import (
    BrokerError,
    EventLogClosed,
    EventLogError,
    InvalidTopic,
    TopicNotFound,
)
from fhirbots.engine.eventlog.factory import create_event_log
from fhirbots.engine.eventlog.port import (
    ConsumerHandle,
    ConsumerOptions,
    EventLog,
    Handler,
    Headers,
    OutgoingMessage,
    Record,
    Retention,
    RetryPolicy,
    StartFrom,
    TopicSpec,
    Validator,
)

__all__ = [
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
