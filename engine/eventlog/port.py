"""The event-log port: what every stage needs from a partitioned, durable message log.

Two adapters implement it: :class:`fhirbots.engine.eventlog.embedded.EmbeddedEventLog` (SQLite in
the data dir, one machine) and :class:`fhirbots.engine.eventlog.kafka.KafkaEventLog` (Apache Kafka).

Semantics shared by both (checked by one contract test suite):

* A key always lands on one partition (Kafka's murmur2 partitioner) and messages with one key
  keep their publish order.
* Consumers join a *group*; each partition is read by one member of the group at a time and
  partitions are spread over the members (rebalanced when members come and go).
* At-least-once: a batch's offsets are committed only after the handler returned. A handler
  that raises gets the same batch again (with back-off); a crash replays the uncommitted tail.
* A record whose payload fails the consumer's ``validate`` callable is a *poison message*:
  it is copied to the topic's dead-letter twin (:func:`fhirbots.schemas.topics.deadletter_topic`)
  with the error in headers, and consumption goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_PARTITIONS",
    "HEADER_ERROR",
    "HEADER_ERROR_TYPE",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "ConsumerHandle",
    "ConsumerOptions",
    "EventLog",
    "Handler",
    "Headers",
    "OutgoingMessage",
    "Record",
    "Retention",
    "RetryPolicy",
    "StartFrom",
    "TopicSpec",
    "Validator",
]

DEFAULT_PARTITIONS = 8
"""Partitions of a topic created without a count: room for 8 workers per stage."""

DEFAULT_BATCH_SIZE = 500
"""Records handed to a handler at once: large enough to amortise a commit, small enough to
keep the replay after a crash short."""

HEADER_ERROR = "fhirbots-error"
"""Dead-letter header: the error message that made the record poison (UTF-8)."""
HEADER_ERROR_TYPE = "fhirbots-error-type"
"""Dead-letter header: the error's class name."""
HEADER_SOURCE_TOPIC = "fhirbots-source-topic"
"""Dead-letter header: the topic the record was read from."""
HEADER_SOURCE_PARTITION = "fhirbots-source-partition"
"""Dead-letter header: its partition (decimal)."""
HEADER_SOURCE_OFFSET = "fhirbots-source-offset"
"""Dead-letter header: its offset (decimal)."""

Headers = tuple[tuple[str, bytes], ...]
"""Message headers: ordered (name, value) pairs; a name may repeat, as in Kafka."""

StartFrom = Literal["earliest", "latest"]
"""Where a group without a committed offset starts reading a partition."""


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to publish.

    Attributes:
        key: Partition key; every message with this key goes to the same partition, in order.
        value: The payload (usually a JSON-serialised model from :mod:`fhirbots.schemas`).
        headers: Extra (name, value) pairs, e.g. a W3C ``traceparent``.
    """

    key: str
    value: bytes
    headers: Headers = ()


@dataclass(frozen=True)
class Record:
    """A message as stored in the log, with its position.

    Attributes:
        topic: Topic name.
        partition: Partition number (0-based).
        offset: Position in the partition; consecutive in the embedded log, increasing in Kafka.
        key: The partition key it was published with.
        value: The payload.
        headers: The headers it was published with.
        timestamp: When the log stored it (UTC).
    """

    topic: str
    partition: int
    offset: int
    key: str
    value: bytes
    headers: Headers
    timestamp: datetime

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


@dataclass(frozen=True)
class Retention:
    """How long a topic keeps its records (both limits apply; None means unlimited).

    Attributes:
        age: Records older than this are deleted.
        bytes_per_partition: When a partition holds more, its oldest records are deleted.
    """

    age: timedelta | None = timedelta(days=7)
    bytes_per_partition: int | None = None


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create on start.

    Attributes:
        name: Topic name (with its version suffix, see :mod:`fhirbots.schemas.topics`).
        partitions: Partition count; the upper bound of parallel consumers in one group.
        retention: Retention limits.
    """

    name: str
    partitions: int = DEFAULT_PARTITIONS
    retention: Retention = field(default_factory=Retention)


@dataclass(frozen=True)
class RetryPolicy:
    """What a consumer does when its handler raises.

    Attributes:
        initial_backoff: Wait before the first retry.
        max_backoff: Ceiling of the doubling back-off.
        max_attempts: After this many failed attempts the batch goes to the dead-letter
            topic and is committed; None retries forever (the stage stalls until fixed,
            which is what at-least-once needs when the failure is transient).
    """

    initial_backoff: timedelta = timedelta(milliseconds=100)
    max_backoff: timedelta = timedelta(seconds=10)
    max_attempts: int | None = None

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        seconds = self.initial_backoff.total_seconds() * (2 ** (attempt - 1))
        return float(min(seconds, self.max_backoff.total_seconds()))


@dataclass(frozen=True)
class ConsumerOptions:
    """How a consumer group member reads.

    Attributes:
        batch_size: Most records per handler call.
        max_wait: How long to wait for a batch to fill once one record is available.
        start_from: Where to start partitions the group has never committed.
        retry: What to do when the handler raises.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    max_wait: timedelta = timedelta(milliseconds=0)
    start_from: StartFrom = "earliest"
    retry: RetryPolicy = field(default_factory=RetryPolicy)


Handler = Callable[[list[Record]], Awaitable[None]]
"""Processes one batch; the batch's offsets are committed when it returns."""

Validator = Callable[[Record], object]
"""Checks one record before the handler sees it; if it raises, the record is poison."""


@runtime_checkable
class ConsumerHandle(Protocol):
    """A running member of a consumer group."""

    @property
    def group(self) -> str:
        """The group it belongs to."""
        ...

    def assignment(self) -> frozenset[tuple[str, int]]:
        """The (topic, partition) pairs it reads right now."""
        ...

    async def wait_assigned(self) -> frozenset[tuple[str, int]]:
        """Wait until the member has joined its group and got partitions; returns them."""
        ...

    async def stop(self) -> None:
        """Leave the group after the batch in hand (its offsets committed if it succeeded)."""
        ...


@runtime_checkable
class EventLog(Protocol):
    """A partitioned, durable log of messages with consumer groups."""

    async def start(self) -> None:
        """Connect / open the storage and create the configured topics."""
        ...

    async def stop(self) -> None:
        """Stop every consumer started here and release connections."""
        ...

    async def ping(self) -> None:
        """One cheap round trip to the log (readiness probes).

        Raises:
            EventLogError: the log is not started or does not answer.
        """
        ...

    def consumers(self) -> frozenset[ConsumerHandle]:
        """The group members started on this log and still running."""
        ...

    async def create_topic(
        self,
        name: str,
        partitions: int = DEFAULT_PARTITIONS,
        retention: Retention | None = None,
    ) -> None:
        """Create ``name`` and its dead-letter twin; no error if they exist."""
        ...

    async def partitions(self, topic: str) -> int:
        """Partition count of ``topic``.

        Raises:
            TopicNotFound: The topic does not exist.
        """
        ...

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Headers | None = None
    ) -> Record:
        """Publish one message; returns once it is durably stored, with its position."""
        ...

    async def publish_many(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[Record]:
        """Publish messages; returns once all are durably stored (per-key order kept)."""
        ...

    async def consume(
        self,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        *,
        options: ConsumerOptions | None = None,
        validate: Validator | None = None,
    ) -> ConsumerHandle:
        """Join ``group`` and run ``handler`` on batches until the handle is stopped."""
        ...

    async def lag(self, group: str) -> dict[tuple[str, int], int]:
        """Records not yet committed by ``group``, per (topic, partition) it has read."""
        ...

    async def reset_offsets(
        self,
        group: str,
        topic: str,
        *,
        offset: int | None = None,
        since: datetime | None = None,
    ) -> dict[int, int]:
        """Move ``group``'s committed offsets on every partition of ``topic`` (replay).

        Give ``offset`` (the same offset on every partition; 0 is the beginning) or ``since``
        (the first record at or after that time). The group should have no running members.

        Returns:
            The new committed offset per partition.
        """
        ...

    async def read(
        self,
        topic: str,
        partition: int,
        *,
        offset: int | None = None,
        since: datetime | None = None,
        limit: int = DEFAULT_BATCH_SIZE,
    ) -> list[Record]:
        """Read records of one partition without a group, from ``offset`` or ``since``."""
        ...

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to be written, per partition of ``topic``."""
        ...
