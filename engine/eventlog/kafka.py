"""Kafka adapter: the :class:`fhirbots.engine.eventlog.port.EventLog` on Apache Kafka via aiokafka.

The producer is idempotent with ``acks=all``, so ``publish_many`` returns only when every
in-sync replica has the messages and retries never duplicate or reorder a key. Consumers use
Kafka's group protocol with auto-commit off: offsets are committed after the handler returned.
Topics (and their dead-letter twins) are created with the configured partitions on start.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from fhirbots.engine.eventlog.errors import BrokerError, EventLogClosed, InvalidTopic, TopicNotFound
from fhirbots.engine.eventlog.metrics import PUBLISHED, REBALANCES
from fhirbots.engine.eventlog.partitioner import partition_for
from fhirbots.engine.eventlog.port import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_PARTITIONS,
    ConsumerHandle,
    ConsumerOptions,
    Handler,
    Headers,
    OutgoingMessage,
    Record,
    Retention,
    TopicSpec,
    Validator,
)
from fhirbots.engine.eventlog.processing import (
    TRANSIENT_RETRY_SECONDS,
    BatchProcessor,
    dead_letter_sink,
    pause,
)
from fhirbots.engine.eventlog.security import KafkaSecurity
from fhirbots.schemas.topics import DEADLETTER_SUFFIX, deadletter_topic

__all__ = ["KafkaConsumerHandle", "KafkaEventLog", "KafkaSettings"]

_log = structlog.get_logger(__name__)

TOPIC_ALREADY_EXISTS = 36
"""Kafka error code of CreateTopics for a topic that exists (not an error for us)."""

IDLE_FETCH_WAIT_MS = 500
"""How long the broker holds an empty fetch (Kafka's default); data ends the wait at once."""

FILL_BATCH_BYTES = 256 * 1024
"""With ``ConsumerOptions.max_wait`` set, the broker waits for this much data (or max_wait)."""

POLL_TIMEOUT_MS = 200
"""Longest a consumer blocks in one fetch, so ``stop()`` is noticed quickly."""


@dataclass(frozen=True)
class KafkaSettings:
    """Settings of the Kafka adapter.

    Attributes:
        bootstrap: ``host:port[,host:port...]`` of the brokers.
        client_id: Client id shown in broker logs and quotas.
        topics: Topics created on start.
        replication_factor: Replicas of topics created here (1 for a single broker).
        linger: How long the producer waits to fill a batch (throughput vs latency).
        session_timeout: A consumer silent this long is removed from its group.
        heartbeat_interval: How often a consumer heartbeats (a third of the session timeout).
        request_timeout: Timeout of one broker request.
        security: TLS and SASL of every connection.
    """

    bootstrap: str
    client_id: str = "fhirbots"
    topics: tuple[TopicSpec, ...] = ()
    replication_factor: int = 1
    linger: timedelta = timedelta(milliseconds=5)
    session_timeout: timedelta = timedelta(seconds=10)
    heartbeat_interval: timedelta = timedelta(seconds=3)
    request_timeout: timedelta = timedelta(seconds=30)
    security: KafkaSecurity = field(default_factory=KafkaSecurity)


def _ms(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


def _to_record(message: Any) -> Record:
    key = message.key.decode() if message.key is not None else ""
    headers = tuple((name, bytes(value or b"")) for name, value in (message.headers or ()))
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=key,
        value=bytes(message.value or b""),
        headers=headers,
        timestamp=datetime.fromtimestamp(message.timestamp / 1000, UTC),
    )


class KafkaEventLog:
    """The event log on Kafka.

    Args:
        settings: Brokers, client id, topics and timeouts.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._partitions: dict[str, int] = {}
        self._consumers: set[KafkaConsumerHandle] = set()

    def _client_args(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.settings.bootstrap,
            "client_id": self.settings.client_id,
            "request_timeout_ms": _ms(self.settings.request_timeout),
            **self.settings.security.client_args(),
        }

    @property
    def _ready_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise EventLogClosed("Kafka event log is not started")
        return self._producer

    @property
    def _ready_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise EventLogClosed("Kafka event log is not started")
        return self._admin

    async def start(self) -> None:
        """Connect the producer and admin client, create the configured topics."""
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            **self._client_args(),
            acks="all",
            enable_idempotence=True,
            linger_ms=_ms(self.settings.linger),
            max_batch_size=512 * 1024,  # large batches carry bulk loads at broker speed
        )
        admin = AIOKafkaAdminClient(**self._client_args())
        try:
            await producer.start()
            await admin.start()
        except KafkaError as exc:
            await producer.stop()
            await admin.close()
            raise BrokerError(f"cannot connect to Kafka at {self.settings.bootstrap}") from exc
        self._producer, self._admin = producer, admin
        for spec in self.settings.topics:
            await self.create_topic(spec.name, spec.partitions, spec.retention)
        _log.info("eventlog.kafka.started", bootstrap=self.settings.bootstrap)

    async def ping(self) -> None:
        """Fetch the cluster's metadata (one request to a broker)."""
        try:
            await self._ready_producer.client.fetch_all_metadata()
        except KafkaError as exc:
            raise BrokerError(f"Kafka at {self.settings.bootstrap} does not answer") from exc

    def consumers(self) -> frozenset[ConsumerHandle]:
        """The group members started here and still running."""
        return frozenset(self._consumers)

    async def stop(self) -> None:
        """Stop consumers, flush and close the producer and admin client."""
        for consumer in list(self._consumers):
            try:
                await consumer.stop()
            except Exception as exc:  # it crashed earlier and was logged; stop the rest
                _log.warning("eventlog.consumer_stop_failed", group=consumer.group, error=repr(exc))
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    # -- topics -------------------------------------------------------------------------

    async def create_topic(
        self,
        name: str,
        partitions: int = DEFAULT_PARTITIONS,
        retention: Retention | None = None,
    ) -> None:
        """Create ``name`` and its dead-letter twin; existing topics are left as they are."""
        if partitions < 1:
            raise InvalidTopic(f"topic {name!r} needs at least one partition")
        keep = retention or Retention()
        configs = {
            "retention.ms": "-1" if keep.age is None else str(_ms(keep.age)),
            "retention.bytes": str(keep.bytes_per_partition or -1),
        }
        names = [name]
        if not name.endswith(DEADLETTER_SUFFIX):
            names.append(deadletter_topic(name))
        new = [
            NewTopic(n, partitions, self.settings.replication_factor, topic_configs=configs)
            for n in names
        ]
        try:
            response = await self._ready_admin.create_topics(new)
        except KafkaError as exc:
            raise BrokerError(f"cannot create topic {name!r}: {exc}") from exc
        for topic, code, *message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise BrokerError(f"cannot create topic {topic!r}: error {code} {message}")
        await self._wait_for_metadata(names)

    async def _wait_for_metadata(self, names: Sequence[str]) -> None:
        # A new topic's leaders take a moment to appear in metadata; publishing before that
        # would stall in the producer, so wait here where the caller expects a pause.
        for _ in range(100):
            counts = await self._describe(names)
            if all(counts.get(n) for n in names):
                self._partitions.update(counts)
                return
            await asyncio.sleep(0.1)
        raise BrokerError(f"topics {list(names)} have no leaders yet")

    async def _describe(self, names: Sequence[str]) -> dict[str, int]:
        try:
            described = await self._ready_admin.describe_topics(list(names))
        except KafkaError as exc:
            raise BrokerError(f"cannot describe topics {list(names)}: {exc}") from exc
        counts = {}
        for topic in described:
            parts = topic.get("partitions") or []
            if topic.get("error_code") == 0 and all(p.get("leader", -1) >= 0 for p in parts):
                counts[topic["topic"]] = len(parts)
        return counts

    async def partitions(self, topic: str) -> int:
        """Partition count of ``topic``."""
        if topic not in self._partitions:
            counts = await self._describe([topic])
            if topic not in counts:
                raise TopicNotFound(f"topic {topic!r} does not exist")
            self._partitions.update(counts)
        return self._partitions[topic]

    # -- publishing ---------------------------------------------------------------------

    async def publish(
        self, topic: str, key: str, value: bytes, headers: Headers | None = None
    ) -> Record:
        """Publish one message; returns when all in-sync replicas have it."""
        return (await self.publish_many(topic, [OutgoingMessage(key, value, headers or ())]))[0]

    async def publish_many(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[Record]:
        """Publish messages; returns when all are acknowledged (per-key order kept).

        Messages are placed with :func:`fhirbots.engine.eventlog.partitioner.partition_for` (Kafka's
        own partitioner) and sent as one record batch per partition, which is several times
        faster than one ``send`` per message.
        """
        if not messages:
            return []
        count = await self.partitions(topic)
        producer = self._ready_producer
        by_partition: dict[int, list[int]] = {}
        for index, message in enumerate(messages):
            by_partition.setdefault(partition_for(message.key, count), []).append(index)
        now = datetime.now(UTC)
        stamp_ms = int(now.timestamp() * 1000)
        pending: list[tuple[asyncio.Future[Any], int, list[int]]] = []
        try:
            for partition, indexes in by_partition.items():
                batch = producer.create_batch()
                members: list[int] = []
                for index in indexes:
                    m = messages[index]
                    args = {"key": m.key.encode(), "value": m.value, "timestamp": stamp_ms}
                    if batch.append(headers=list(m.headers), **args) is None:
                        pending.append(
                            (
                                await producer.send_batch(batch, topic, partition=partition),
                                partition,
                                members,
                            )
                        )
                        batch, members = producer.create_batch(), []
                        if batch.append(headers=list(m.headers), **args) is None:
                            raise BrokerError(f"message of {len(m.value)} B exceeds a batch")
                    members.append(index)
                pending.append(
                    (
                        await producer.send_batch(batch, topic, partition=partition),
                        partition,
                        members,
                    )
                )
            acks = await asyncio.gather(*(future for future, _, _ in pending))
        except KafkaError as exc:
            raise BrokerError(f"publish to {topic!r} failed: {exc}") from exc
        PUBLISHED.labels(topic).inc(len(messages))
        placed: list[Record | None] = [None] * len(messages)
        for (_, partition, members), ack in zip(pending, acks, strict=True):
            for relative, index in enumerate(members):
                m = messages[index]
                placed[index] = Record(
                    topic, partition, ack.offset + relative, m.key, m.value, m.headers, now
                )
        return [r for r in placed if r is not None]

    # -- consuming ----------------------------------------------------------------------

    async def consume(
        self,
        topics: Sequence[str],
        group: str,
        handler: Handler,
        *,
        options: ConsumerOptions | None = None,
        validate: Validator | None = None,
    ) -> KafkaConsumerHandle:
        """Join ``group`` on ``topics`` and handle batches until the handle is stopped."""
        for topic in topics:
            await self.partitions(topic)
        handle = KafkaConsumerHandle(
            self, tuple(topics), group, handler, options or ConsumerOptions(), validate
        )
        await handle.start()
        self._consumers.add(handle)
        return handle

    def _forget(self, handle: KafkaConsumerHandle) -> None:
        self._consumers.discard(handle)

    def _plain_consumer(self, **extra: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(**self._client_args(), enable_auto_commit=False, **extra)

    async def _bounds(self, topic: str) -> dict[int, tuple[int, int]]:
        """(first retained offset, next offset) per partition of ``topic``."""
        count = await self.partitions(topic)
        parts = [TopicPartition(topic, p) for p in range(count)]
        consumer = self._plain_consumer()
        await consumer.start()
        try:
            starts = await consumer.beginning_offsets(parts)
            ends = await consumer.end_offsets(parts)
        except KafkaError as exc:
            raise BrokerError(f"cannot read offsets of {topic!r}: {exc}") from exc
        finally:
            await consumer.stop()
        return {tp.partition: (int(starts[tp]), int(ends[tp])) for tp in parts}

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to be written, per partition."""
        return {p: end for p, (_, end) in (await self._bounds(topic)).items()}

    async def _assigned_topics(self, group: str) -> set[str]:
        """Topics the live members of ``group`` are assigned partitions of."""
        responses = await self._ready_admin.describe_consumer_groups([group])
        topics: set[str] = set()
        for response in responses:
            for described in response.to_object()["groups"]:
                for member in described["members"]:
                    raw = member["member_assignment"]
                    if raw:
                        decoded = ConsumerProtocolMemberAssignment.decode(raw)
                        topics.update(topic for topic, _ in decoded.assignment)
        return topics

    async def lag(self, group: str) -> dict[tuple[str, int], int]:
        """Uncommitted records of ``group`` per partition it committed to or is assigned.

        A partition without a committed offset counts from its first retained record.
        """
        try:
            committed = await self._ready_admin.list_consumer_group_offsets(group)
            topics = {tp.topic for tp in committed} | await self._assigned_topics(group)
        except KafkaError as exc:
            raise BrokerError(f"cannot read offsets of group {group!r}: {exc}") from exc
        result = {}
        for topic in sorted(topics):
            for partition, (start, end) in (await self._bounds(topic)).items():
                meta = committed.get(TopicPartition(topic, partition))
                done = meta.offset if meta is not None and meta.offset >= 0 else start
                result[(topic, partition)] = max(end - max(done, start), 0)
        return result

    async def reset_offsets(
        self,
        group: str,
        topic: str,
        *,
        offset: int | None = None,
        since: datetime | None = None,
    ) -> dict[int, int]:
        """Commit new offsets for ``group`` on ``topic`` (the group must have no members)."""
        if (offset is None) == (since is None):
            raise InvalidTopic("give exactly one of offset or since")
        count = await self.partitions(topic)
        parts = [TopicPartition(topic, p) for p in range(count)]
        consumer = self._plain_consumer(group_id=group)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(parts)
            starts = await consumer.beginning_offsets(parts)
            if since is not None:
                stamp = int(since.timestamp() * 1000)
                found = await consumer.offsets_for_times({tp: stamp for tp in parts})
                targets = {tp: found[tp].offset if found[tp] else ends[tp] for tp in parts}
            else:
                targets = {tp: min(max(offset or 0, starts[tp]), ends[tp]) for tp in parts}
            consumer.assign(parts)
            await consumer.commit(targets)
        except KafkaError as exc:
            raise BrokerError(f"cannot reset offsets of group {group!r}: {exc}") from exc
        finally:
            await consumer.stop()
        return {tp.partition: int(o) for tp, o in targets.items()}

    async def read(
        self,
        topic: str,
        partition: int,
        *,
        offset: int | None = None,
        since: datetime | None = None,
        limit: int = DEFAULT_BATCH_SIZE,
    ) -> list[Record]:
        """Read up to ``limit`` records of one partition from ``offset`` or time ``since``."""
        await self.partitions(topic)
        tp = TopicPartition(topic, partition)
        consumer = self._plain_consumer(auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            if since is not None:
                found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000)})
                start = found[tp].offset if found[tp] else end
            else:
                start = max(offset or 0, (await consumer.beginning_offsets([tp]))[tp])
            consumer.seek(tp, start)
            records: list[Record] = []
            while start + len(records) < end and len(records) < limit:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=limit)
                fetched = batch.get(tp, [])
                if not fetched:
                    break
                records.extend(_to_record(m) for m in fetched)
            return records[:limit]
        except KafkaError as exc:
            raise BrokerError(f"cannot read {topic!r}/{partition}: {exc}") from exc
        finally:
            await consumer.stop()


class KafkaConsumerHandle:
    """A member of a Kafka consumer group (see :meth:`KafkaEventLog.consume`)."""

    def __init__(
        self,
        log: KafkaEventLog,
        topics: tuple[str, ...],
        group: str,
        handler: Handler,
        options: ConsumerOptions,
        validate: Validator | None,
    ) -> None:
        self._log = log
        self._topics = topics
        self._group = group
        self._options = options
        self._stopping = asyncio.Event()
        self._joined = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        settings = log.settings
        self._consumer = AIOKafkaConsumer(
            *topics,
            **{**log._client_args(), "client_id": f"{settings.client_id}-{uuid.uuid4().hex[:8]}"},
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=options.start_from,
            max_poll_records=options.batch_size,
            # Long poll: the broker answers as soon as one record is there (fetch_min_bytes
            # 1) or after max_wait when batches should fill first.
            fetch_min_bytes=FILL_BATCH_BYTES if options.max_wait else 1,
            fetch_max_wait_ms=_ms(options.max_wait) or IDLE_FETCH_WAIT_MS,
            session_timeout_ms=_ms(settings.session_timeout),
            heartbeat_interval_ms=_ms(settings.heartbeat_interval),
        )
        self._processor = BatchProcessor(
            group=group,
            handler=handler,
            validate=validate,
            retry=options.retry,
            dead_letter=dead_letter_sink(log),
            stopping=self._stopping,
        )

    @property
    def group(self) -> str:
        """The consumer group."""
        return self._group

    def assignment(self) -> frozenset[tuple[str, int]]:
        """Partitions this member reads now."""
        return frozenset((tp.topic, tp.partition) for tp in self._consumer.assignment())

    async def wait_assigned(self) -> frozenset[tuple[str, int]]:
        """Wait until the group coordinator gave this member partitions; returns them."""
        await self._joined.wait()
        return self.assignment()

    async def start(self) -> None:
        """Connect and start the consume loop (joining the group happens in the loop)."""
        try:
            await self._consumer.start()
        except KafkaError as exc:
            raise BrokerError(f"consumer of group {self._group!r} cannot connect") from exc
        self._task = asyncio.create_task(self._run(), name=f"kafka consumer {self._group}")

    async def stop(self) -> None:
        """Finish the batch in hand, commit it, leave the group."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self._loop()
                    return
                except (BrokerError, KafkaError) as exc:  # broker away: try again, keep the group
                    _log.warning("eventlog.consumer_error", group=self._group, error=str(exc))
                    if await pause(self._stopping, TRANSIENT_RETRY_SECONDS):
                        return
        except Exception:
            _log.exception("eventlog.consumer_crashed", group=self._group)
            raise
        finally:
            self._log._forget(self)
            await self._consumer.stop()

    async def _loop(self) -> None:
        seen: frozenset[tuple[str, int]] = frozenset()
        while not self._stopping.is_set():
            batch = await self._consumer.getmany(
                timeout_ms=POLL_TIMEOUT_MS, max_records=self._options.batch_size
            )
            current = self.assignment()
            if current:
                self._joined.set()
            if current != seen:
                seen = current
                REBALANCES.labels(self._group).inc()
                _log.info("eventlog.assigned", group=self._group, partitions=sorted(current))
            records = [_to_record(m) for messages in batch.values() for m in messages]
            if not records:
                continue
            if not await self._processor.process(records):
                return
            offsets: dict[TopicPartition, int] = {}
            for record in records:
                offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # Rebalanced while handling: the new owner redoes the batch (at-least-once).
                _log.info("eventlog.commit_refused", group=self._group, error=str(exc))
            except KafkaError as exc:
                raise BrokerError(f"commit of group {self._group!r} failed") from exc
