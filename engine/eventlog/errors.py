"""Errors of the event log. Adapters translate driver errors at their boundary (aiokafka's
``KafkaError`` and ``sqlite3.Error`` become ``BrokerError``, the cause chained).

Under :class:`fhirbots.schemas.errors.FhirbotsError`::

    EventLogError                  base of every event-log error
    ├── EventLogClosed             the log was used before ``start()`` or after ``stop()``
    ├── TopicNotFound              publish or consume on a topic that was never created
    ├── InvalidTopic               a bad topic name, partition count or retention
    ├── BrokerError                the broker (Kafka) or the storage (SQLite) failed
    └── StageSpecError             (faust_worker) a stage reference that names no stage
"""

from __future__ import annotations

from fhirbots.schemas.errors import FhirbotsError

__all__ = ["BrokerError", "EventLogClosed", "EventLogError", "InvalidTopic", "TopicNotFound"]


class EventLogError(FhirbotsError):
    """Base of every error raised by an event log."""


class EventLogClosed(EventLogError):
    """The event log is not started, or has been stopped."""


class TopicNotFound(EventLogError):
    """The topic does not exist; create it with ``create_topic`` first."""


class InvalidTopic(EventLogError):
    """A topic name, partition count or retention setting is not valid."""


class BrokerError(EventLogError):
    """The underlying broker or storage failed; the original error is the ``__cause__``."""
