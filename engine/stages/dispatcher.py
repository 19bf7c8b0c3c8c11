"""The dispatcher stage: reads ``fhir.notifications.v1`` and delivers every notification.

Intake and delivery are decoupled. A batch of topic records is *accepted* into the delivery
store (each notification gets its subscription's next event number, durably, in one
transaction) and only then are the records' offsets committed; delivery then runs from the
store in one :class:`fhirbots.engine.delivery.lane.Lane` per subscription. So a failing endpoint
never blocks its partition (other subscriptions on it go on), order and numbering hold per
subscription, and a killed dispatcher resumes its undelivered rows with their numbers.

With several dispatchers (distributed mode), each delivers only the subscriptions whose
partition it was assigned; a scan of the store every :data:`SCAN_SECONDS` picks up retries
requested through the API or CLI of another process, and rows left by a restart.

The dispatcher also follows Subscription changes on ``fhir.changes.v1`` (its own group) to
handshake new topic-based rest-hook subscriptions and to register heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import orjson
import structlog

from fhirbots.engine.delivery import metrics
from fhirbots.engine.delivery.bot import BotInvoker
from fhirbots.engine.delivery.errors import DeliveryError
from fhirbots.engine.delivery.factory import create_delivery_store, defaults_from
from fhirbots.engine.delivery.lane import Lane, LaneContext
from fhirbots.engine.delivery.lifecycle import Lifecycle
from fhirbots.engine.delivery.marker import DeliveredMarker
from fhirbots.engine.delivery.message import MessageChannel
from fhirbots.engine.delivery.payload import FHIR_JSON, status_bundle, subscription_status
from fhirbots.engine.delivery.policy import DeliveryDefaults
from fhirbots.engine.delivery.records import AttemptLog
from fhirbots.engine.delivery.resthook import RestHookChannel
from fhirbots.engine.delivery.safety import EndpointGuard
from fhirbots.engine.delivery.sender import Sender
from fhirbots.engine.delivery.store import Accepted, Delivery, DeliveryStore
from fhirbots.engine.delivery.subscriptions import (
    SubscriptionInfo,
    SubscriptionRegistry,
    channel_spec,
    topic_of,
)
from fhirbots.engine.delivery.websocket import WebSocketHub
from fhirbots.engine.eventlog.partitioner import partition_for
from fhirbots.engine.eventlog.port import ConsumerHandle, ConsumerOptions, EventLog, Record
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.notifications import Notification
from fhirbots.schemas.topics import CHANGES, NOTIFICATIONS

__all__ = ["DISPATCHER_GROUP", "SCAN_SECONDS", "Dispatcher", "open_dispatcher"]

DISPATCHER_GROUP = "fhirbots.dispatcher"
"""Consumer group of the dispatchers on ``fhir.notifications.v1``."""

LIFECYCLE_SUFFIX = ".lifecycle"
"""Suffix of the group following Subscription changes (handshakes, heartbeats)."""

LIFECYCLE_BATCH_WAIT = timedelta(milliseconds=200)
"""The Subscription-change follower reads every change event; waiting this long for a batch
to fill keeps its offset commits (disk syncs shared with the hot path) few, and only delays
a handshake."""

SCAN_SECONDS = 1.0
"""How often the store is scanned for pending rows no lane is delivering, and heartbeats."""

PARSED_LIMIT = 10_000
"""Parsed records kept between validation and handling (a batch is at most 500)."""

PURGE_SECONDS = 3600.0
"""How often notifications older than the retention are deleted from the store."""

_log = structlog.get_logger("fhirbots.engine.delivery")


class Dispatcher:
    """Delivers notifications from the event log.

    Args:
        event_log: Source of notifications (and target of the message channel).
        store: Delivery state.
        storage: The datastore (Subscriptions are read from it).
        fhir: The FHIR service (status changes and AuditEvents are written through it).
        defaults: Engine-wide delivery settings.
        base_url: Base of ``fullUrl`` in notification Bundles.
        bots: Runs ``Bot/<id>`` endpoints.
        hub: Bound websockets (when this process serves the API).
        group: Consumer group.
        topic: Notification topic.
    """

    def __init__(
        self,
        *,
        event_log: EventLog,
        store: DeliveryStore,
        storage: Storage,
        fhir: FhirService,
        defaults: DeliveryDefaults,
        base_url: str,
        bots: BotInvoker | None = None,
        hub: WebSocketHub | None = None,
        group: str = DISPATCHER_GROUP,
        topic: str = NOTIFICATIONS,
        changes_topic: str = CHANGES,
    ) -> None:
        self.event_log = event_log
        self.store = store
        self.defaults = defaults
        self.group = group
        self.topic = topic
        self.changes_topic = changes_topic
        self.hub = hub
        self.registry = SubscriptionRegistry(storage, defaults)
        self.lifecycle = Lifecycle(fhir, self.registry)
        self.resthook = RestHookChannel(EndpointGuard.from_cidrs(defaults.allowed_networks))
        self.sender = Sender(
            self.resthook,
            base_url=base_url,
            message=MessageChannel(event_log),
            hub=hub,
            bots=bots,
        )
        self._storage = storage
        self.marker = DeliveredMarker(store)
        self.records = AttemptLog(event_log)
        """Publishes a record of every attempt to ``fhir.deliveries.v1``."""
        self._lanes: dict[tuple[str, str], Lane] = {}
        self._consumer: ConsumerHandle | None = None
        self._changes: ConsumerHandle | None = None
        self._partitions = 1
        self._tasks: list[asyncio.Task[None]] = []
        self._last_sent: dict[tuple[str, str], float] = {}
        self._parsed: dict[tuple[str, int, int], Notification] = {}
        self._context = LaneContext(
            store=store,
            registry=self.registry,
            lifecycle=self.lifecycle,
            sender=self.sender,
            defaults=defaults,
            concurrency=asyncio.Semaphore(defaults.max_concurrency),
            marker=self.marker,
            owns=self.owns,
            delivered=self._delivered,
            records=self.records,
        )

    def set_bot_invoker(self, bots: BotInvoker) -> None:
        """Route ``Bot/<id>`` endpoints to ``bots`` from now on."""
        self.sender.bots = bots

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the consumer groups and start the scan loop."""
        await self.event_log.create_topic(self.topic)
        await self.event_log.create_topic(self.changes_topic)
        self._partitions = await self.event_log.partitions(self.topic)
        self.marker.start()
        await self.records.start()
        self._consumer = await self.event_log.consume(
            [self.topic], self.group, self._handle, validate=self._validate
        )
        self._changes = await self.event_log.consume(
            [self.changes_topic],
            self.group + LIFECYCLE_SUFFIX,
            self._on_changes,
            options=ConsumerOptions(start_from="latest", max_wait=LIFECYCLE_BATCH_WAIT),
        )
        self._tasks.append(asyncio.create_task(self._scan_loop(), name="delivery-scan"))

    async def wait_assigned(self) -> None:
        """Wait until this dispatcher owns partitions (tests, benchmarks)."""
        if self._consumer is not None:
            await self._consumer.wait_assigned()
        if self._changes is not None:
            await self._changes.wait_assigned()

    async def stop(self) -> None:
        """Leave the groups and stop every lane (pending rows stay in the store)."""
        for consumer in (self._consumer, self._changes):
            if consumer is not None:
                await consumer.stop()
        self._consumer = self._changes = None
        tasks = [*self._tasks, *(lane.task for lane in self._lanes.values() if lane.task)]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._lanes.clear()
        await self.marker.stop()
        await self.records.stop()
        await self.resthook.close()

    # -- ownership and lanes ---------------------------------------------------------------

    def owns(self, project: str, subscription_id: str) -> bool:
        """Whether this dispatcher delivers the subscription (its partition is assigned)."""
        if self._consumer is None:
            return False
        partition = partition_for(f"{project}/{subscription_id}", self._partitions)
        return (self.topic, partition) in self._consumer.assignment()

    def wake(
        self, project: str, subscription_id: str, offers: Sequence[Delivery] | None = None
    ) -> None:
        """Hand new notifications to the subscription's lane (started if needed); without
        ``offers``, make the lane look at the store."""
        key = (project, subscription_id)
        lane = self._lanes.get(key)
        if lane is None or not lane.alive:
            lane = Lane(project, subscription_id, self._context)
            self._lanes[key] = lane
            lane.start().add_done_callback(lambda _: self._drop(key, lane))
        if offers is None:
            lane.wake()
        else:
            lane.offer(offers)

    def _drop(self, key: tuple[str, str], lane: Lane) -> None:
        if self._lanes.get(key) is lane:
            del self._lanes[key]

    def _delivered(self, project: str, subscription_id: str) -> None:
        self._last_sent[(project, subscription_id)] = time.monotonic()

    # -- intake ----------------------------------------------------------------------------

    def _validate(self, record: Record) -> Notification:
        """Parse a record (a poison message if it fails); the handler reuses the result."""
        notification = Notification.model_validate_json(record.value)
        if len(self._parsed) >= PARSED_LIMIT:
            self._parsed.clear()
        self._parsed[(record.topic, record.partition, record.offset)] = notification
        return notification

    def _parsed_record(self, record: Record) -> Notification:
        found = self._parsed.pop((record.topic, record.partition, record.offset), None)
        return found if found is not None else Notification.model_validate_json(record.value)

    async def _handle(self, records: list[Record]) -> None:
        notifications = [self._parsed_record(r) for r in records]
        accepted = await self.store.accept(notifications)
        offers: dict[tuple[str, str], list[Delivery]] = {}
        now = datetime.now(UTC)
        for notification, taken in zip(notifications, accepted, strict=True):
            if taken.new:
                delivery = Delivery(
                    notification, taken.event_number, "pending", 0, 0.0, None, now, now
                )
                offers.setdefault((taken.project, taken.subscription_id), []).append(delivery)
        metrics.ACCEPTED.inc(sum(len(v) for v in offers.values()))
        for key, deliveries in offers.items():
            self.wake(*key, offers=deliveries)

    async def accept(self, notifications: Sequence[Notification]) -> list[Accepted]:
        """Accept notifications directly (``$resend``) and start delivering them."""
        accepted = await self.store.accept(notifications)
        for key in dict.fromkeys((a.project, a.subscription_id) for a in accepted):
            if self.owns(*key):
                self.wake(*key)
        return accepted

    async def _scan_loop(self) -> None:
        purged_at = time.monotonic()
        while True:
            await asyncio.sleep(SCAN_SECONDS)
            try:
                await self.scan()
                await self.heartbeats()
                if time.monotonic() - purged_at > PURGE_SECONDS:
                    purged_at = time.monotonic()
                    removed = await self.purge(self.defaults.retention_days)
                    _log.info("delivery log purged", removed=removed)
            except DeliveryError as exc:
                _log.warning("delivery scan failed", error=str(exc))

    async def scan(self) -> None:
        """Start lanes for owned subscriptions with pending rows (after a restart, a retry
        requested elsewhere, or a rebalance)."""
        for project, subscription_id in await self.store.pending_subscriptions():
            if self.owns(project, subscription_id):
                self.wake(project, subscription_id)

    # -- dead letters and replay ----------------------------------------------------------

    async def retry_dead_letters(
        self,
        project: str,
        notification_ids: Sequence[str] | None = None,
        subscription_id: str | None = None,
    ) -> int:
        """Dead letters back to pending with their event numbers; returns how many."""
        requeued = await self.store.requeue(project, notification_ids, subscription_id)
        for key in dict.fromkeys(requeued):
            if self.owns(*key):
                self.wake(*key)
        return len(requeued)

    async def resend(
        self, project: str, subscription_id: str, resource_type: str, resource_id: str
    ) -> Accepted:
        """Send the current version of a resource to a subscription again (``$resend``): a new
        notification with a new event number.

        Raises:
            DeliveryError: The subscription or the resource does not exist.
        """
        info = await self.registry.get(project, subscription_id)
        if info is None:
            raise DeliveryError(f"Subscription/{subscription_id} does not exist")
        stored = await self._storage.read(project, resource_type, resource_id)
        if stored is None or stored.deleted or stored.content is None:
            raise DeliveryError(f"{resource_type}/{resource_id} does not exist")
        notification = Notification(
            notification_id=f"resend-{uuid.uuid4()}",
            project=project,
            subscription_id=subscription_id,
            subscription_version=str(info.version),
            topic=topic_of(info.resource),
            event_id=f"resend-{uuid.uuid4()}",
            interaction="create" if stored.version_id == 1 else "update",
            resource_type=resource_type,
            resource_id=resource_id,
            version_id=str(stored.version_id),
            resource=stored.content,
            time=stored.last_updated,
            matched=("$resend",),
            channel=channel_spec(info.resource),
        )
        return (await self.accept([notification]))[0]

    # -- topic-based protocol: handshake and heartbeats ------------------------------------

    async def _on_changes(self, records: list[Record]) -> None:
        for record in records:
            if "/Subscription/" not in record.key:
                continue
            event = ChangeEvent.model_validate_json(record.value)
            await self.subscription_changed(event)

    async def subscription_changed(self, event: ChangeEvent) -> None:
        """Set up a ``requested`` subscription (a handshake for topic-based rest-hooks, at once
        for the others); (un)register heartbeats (rest-hook and websocket)."""
        project, subscription_id = event.project, event.resource_id
        resource = event.resource
        if event.interaction == "delete" or resource is None:
            await self.store.set_heartbeat(project, subscription_id, None)
            self.registry.forget(project, subscription_id)
            return
        self.registry.forget(project, subscription_id)
        info = await self.registry.get(project, subscription_id)
        if info is None:
            return
        kind = (info.resource.get("channel") or {}).get("type")
        topic_based = topic_of(info.resource) is not None
        if info.status == "requested" and not (topic_based and kind == "rest-hook"):
            # Nothing to check with the client first: the server sets it up (R4 "requested").
            info = await self.lifecycle.set_status(project, info, "active", "set up on request")
        if not topic_based:
            return
        if kind == "rest-hook" and info.status == "requested":
            info = await self.handshake(project, info)
        beats = kind in ("rest-hook", "websocket") and info.status == "active"
        period = info.policy.heartbeat_period if beats else None
        await self.store.set_heartbeat(project, subscription_id, period)

    async def _send_status(self, project: str, info: SubscriptionInfo, kind: str) -> str | None:
        """Send a handshake or heartbeat Bundle; returns the error, or None on success."""
        subscription_id = str(info.resource["id"])
        counters = await self.store.counters(project, subscription_id)
        status = subscription_status(
            project_subscription=(project, subscription_id),
            status=info.status,
            status_type="handshake" if kind == "handshake" else "heartbeat",
            events_since_start=counters.events_since_start,
            topic=topic_of(info.resource),
        )
        channel = info.resource.get("channel") or {}
        if channel.get("type") == "websocket":
            if self.hub is not None:
                await self.hub.send(
                    project, subscription_id, orjson.dumps(status_bundle(status)).decode()
                )
            return None
        result = await self.resthook.send(
            channel.get("endpoint") or "",
            orjson.dumps(status_bundle(status)),
            content_type=FHIR_JSON,
            policy=info.policy,
            headers={},
        )
        _log.info(
            kind,
            project=project,
            subscription=subscription_id,
            outcome="success" if result.success else "failure",
            error=result.error,
        )
        return None if result.success else (result.error or "failed")

    async def handshake(self, project: str, info: SubscriptionInfo) -> SubscriptionInfo:
        """Handshake: ``requested`` becomes ``active`` on success, ``error`` otherwise."""
        error = await self._send_status(project, info, "handshake")
        if error is None:
            return await self.lifecycle.set_status(project, info, "active", "handshake succeeded")
        return await self.lifecycle.set_status(project, info, "error", f"handshake: {error}")

    async def heartbeats(self) -> None:
        """Send heartbeats that are due (no notification within the period)."""
        now = time.monotonic()
        for project, subscription_id, period in await self.store.heartbeats():
            key = (project, subscription_id)
            if not self.owns(project, subscription_id):
                continue
            last = self._last_sent.setdefault(key, now)
            if now - last < period:
                continue
            self._last_sent[key] = now
            info = await self.registry.get(project, subscription_id)
            if info is None or info.status != "active":
                continue
            await self._send_status(project, info, "heartbeat")

    async def purge(self, older_than_days: float) -> int:
        """Drop delivered and discarded rows older than that (retention of ``$events``)."""
        before = datetime.fromtimestamp(time.time() - older_than_days * 86400, UTC)
        return await self.store.purge(before)


async def open_dispatcher(
    settings: Settings,
    *,
    storage: Storage,
    fhir: FhirService,
    event_log: EventLog,
    bots: BotInvoker | None = None,
    hub: WebSocketHub | None = None,
) -> Dispatcher:
    """A dispatcher with an open store (not yet started: call ``start()`` to deliver)."""
    store = create_delivery_store(settings)
    await store.open()
    return Dispatcher(
        event_log=event_log,
        store=store,
        storage=storage,
        fhir=fhir,
        defaults=defaults_from(settings),
        base_url=settings.base_url(),
        bots=bots,
        hub=hub if hub is not None else WebSocketHub(),
    )
