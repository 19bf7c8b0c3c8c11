"""The matcher stage runner: ``fhir.changes.v1`` -> ``fhir.notifications.v1``.

I/O around the pure matcher (:func:`fhirbots.subscriptions.matching.match_event`):

* consumes change events in a consumer group (undecodable records are dead-lettered by the
  event log's ``validate`` hook);
* keeps each project's :class:`~fhirbots.subscriptions.config.ProjectConfig` in memory and reloads
it
  from the datastore *before* matching an event whose ``config_generation`` is larger than the
  loaded one, so a Subscription or SubscriptionTopic change takes effect for the very next
  event in every matcher process, with no polling and no query per event;
* publishes notifications keyed by subscription, and loop-guard suppressions to
  ``fhir.suppressed.v1`` (also logged);
* marks a subscription whose evaluation fails at run time: it stops being offered at once, and
  its resource is updated to ``status: error`` with the message in ``Subscription.error``
  (that write bumps the generation, so every matcher drops it).

Offsets are committed after the batch's messages are published (at-least-once); a replayed
event yields notifications with the same ids.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from prometheus_client import Counter, Histogram

from fhirbots.engine.errors import FhirError
from fhirbots.engine.eventlog.port import (
    ConsumerHandle,
    ConsumerOptions,
    EventLog,
    OutgoingMessage,
    Record,
    TopicSpec,
)
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.observability import otel
from fhirbots.engine.storage.model import WriteContext
from fhirbots.engine.storage.port import Storage
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.topics import CHANGES, NOTIFICATIONS, SUPPRESSED
from fhirbots.subscriptions.config import ProjectConfig, build_config
from fhirbots.subscriptions.loop_guard import LoopGuardPolicy
from fhirbots.subscriptions.matching import Failure, match_event
from fhirbots.subscriptions.model import CRITERIA_ERROR_URL
from fhirbots.subscriptions.search.project import DEFINITION_TYPES

__all__ = [
    "MATCHER_AUTHOR",
    "MATCHER_GROUP",
    "ErrorMarker",
    "MatcherStage",
    "MatcherTopics",
    "load_config",
    "service_error_marker",
]

MATCHER_GROUP = "fhirbots-matcher"
"""Consumer group of every matcher process: partitions of the change topic spread over them."""

MATCHER_AUTHOR = "system/matcher"
"""Author of the writes the matcher makes (marking a subscription as errored)."""

ErrorMarker = Callable[[str, Failure], Awaitable[None]]
"""``(project, failure)``: record a subscription's run-time failure durably."""

log = structlog.get_logger(__name__)

EVENTS = Counter("fhirbots_matcher_events_total", "Change events matched")
NOTIFICATIONS_MADE = Counter("fhirbots_matcher_notifications_total", "Notifications produced")
SUPPRESSIONS = Counter("fhirbots_matcher_suppressed_total", "Notifications the loop guard withheld")
FAILURES = Counter("fhirbots_matcher_failures_total", "Subscriptions failing at run time")
RELOADS = Counter("fhirbots_matcher_reloads_total", "Project configuration reloads")
BATCH_SECONDS = Histogram("fhirbots_matcher_batch_seconds", "Time to match one batch")


@dataclass(frozen=True)
class MatcherTopics:
    """Topics the stage reads and writes (tests use unique names)."""

    changes: str = CHANGES
    notifications: str = NOTIFICATIONS
    suppressed: str = SUPPRESSED

    def specs(self) -> tuple[TopicSpec, ...]:
        """The topics to create."""
        return (TopicSpec(self.changes), TopicSpec(self.notifications), TopicSpec(self.suppressed))


async def load_config(storage: Storage, project: str, generation: int) -> ProjectConfig:
    """Read and parse a project's subscriptions and topics from the datastore (one query), with
    the SearchParameters, ValueSets and CodeSystems their criteria may use."""
    rows = await storage.current_resources(
        project, "Subscription", "SubscriptionTopic", *DEFINITION_TYPES
    )
    return build_config(project, generation, (r.content for r in rows if r.content is not None))


def service_error_marker(fhir: FhirService) -> ErrorMarker:
    """An :data:`ErrorMarker` that sets ``status: error`` and ``error`` on the Subscription.

    The update is conditional on the version that failed, so of several matcher processes
    only one writes, and a subscription fixed meanwhile is left alone.
    """

    async def mark(project: str, failure: Failure) -> None:
        try:
            stored = await fhir.read(project, "Subscription", failure.subscription_id)
            if str(stored.version_id) != failure.subscription_version or stored.content is None:
                return
            marker = {"url": CRITERIA_ERROR_URL, "valueBoolean": True}
            others = [
                e for e in stored.content.get("extension", []) if e.get("url") != CRITERIA_ERROR_URL
            ]
            updated = {
                **stored.content,
                "status": "error",
                "error": failure.message,
                "extension": [*others, marker],
            }
            await fhir.update(
                project,
                "Subscription",
                failure.subscription_id,
                updated,
                WriteContext(author=MATCHER_AUTHOR),
                if_match=stored.version_id,
            )
        except FhirError as exc:
            log.warning(
                "could not mark subscription as errored",
                project=project,
                subscription=failure.subscription_id,
                error=exc.message,
            )

    return mark


class MatcherStage:
    """Matches change events against subscriptions and publishes notifications.

    Args:
        storage: The datastore (configuration is read from it on generation changes).
        publisher: The event log notifications are published to.
        policy: Loop guard policy.
        mark_error: Records run-time failures durably (None: only logged and skipped).
        topics: Topic names.
    """

    def __init__(
        self,
        storage: Storage,
        publisher: EventLog,
        *,
        policy: LoopGuardPolicy | None = None,
        mark_error: ErrorMarker | None = None,
        topics: MatcherTopics | None = None,
    ) -> None:
        self._storage = storage
        self._publisher = publisher
        self.policy = policy or LoopGuardPolicy()
        self._mark_error = mark_error
        self.topics = topics or MatcherTopics()
        self._configs: dict[str, ProjectConfig] = {}
        self._reload_lock = asyncio.Lock()
        """Serialises reloads, so concurrent batches never store an older configuration."""
        self._handle: ConsumerHandle | None = None

    async def config_for(self, project: str, generation: int) -> ProjectConfig:
        """The project's configuration, reloaded first if ``generation`` is newer."""
        loaded = self._configs.get(project)
        if loaded is not None and loaded.generation >= generation:
            return loaded
        if loaded is None and generation == 0:
            config = ProjectConfig.empty(project)  # never configured: nothing to read
            self._configs[project] = config
            return config
        async with self._reload_lock:
            loaded = self._configs.get(project)  # another batch may have loaded it meanwhile
            if loaded is not None and loaded.generation >= generation:
                return loaded
            config = await load_config(self._storage, project, generation)
            self._configs[project] = config
        RELOADS.inc()
        log.info(
            "subscriptions loaded",
            project=project,
            generation=generation,
            active=config.index.size,
            problems=len(config.problems),
        )
        return config

    async def handle(self, records: list[Record]) -> None:
        """Match one batch and publish what it produced (the consumer's handler)."""
        started = time.perf_counter()
        notifications: list[OutgoingMessage] = []
        suppressed: list[OutgoingMessage] = []
        failures: list[tuple[str, Failure]] = []
        for record in records:
            event = ChangeEvent.model_validate_json(record.value)
            config = await self.config_for(event.project, event.config_generation)
            with otel.span(
                "fhirbots.match", event.traceparent, project=event.project, event=event.event_id
            ):
                outcome = match_event(config, event, self.policy)
            for note in outcome.notifications:
                notifications.append(OutgoingMessage(note.key, note.model_dump_json().encode()))
            for item in outcome.suppressed:
                log.warning(
                    "notification suppressed by the loop guard",
                    project=item.project,
                    subscription=item.subscription_id,
                    bot=item.bot,
                    event_id=item.event_id,
                    chain=[link.bot for link in item.causation],
                )
                suppressed.append(OutgoingMessage(item.key, item.model_dump_json().encode()))
            for failure in outcome.failures:
                config.index.disable(failure.subscription_id)
                log.warning(
                    "subscription failed at run time",
                    project=event.project,
                    subscription=failure.subscription_id,
                    error=failure.message,
                )
                failures.append((event.project, failure))
        if notifications:
            await self._publisher.publish_many(self.topics.notifications, notifications)
        if suppressed:
            await self._publisher.publish_many(self.topics.suppressed, suppressed)
        if self._mark_error is not None:
            for project, failure in failures:
                await self._mark_error(project, failure)
        EVENTS.inc(len(records))
        NOTIFICATIONS_MADE.inc(len(notifications))
        SUPPRESSIONS.inc(len(suppressed))
        FAILURES.inc(len(failures))
        BATCH_SECONDS.observe(time.perf_counter() - started)

    async def start(
        self,
        event_log: EventLog,
        *,
        group: str = MATCHER_GROUP,
        options: ConsumerOptions | None = None,
    ) -> ConsumerHandle:
        """Create the topics and join the consumer group of the change topic."""
        for spec in self.topics.specs():
            await event_log.create_topic(spec.name, spec.partitions, spec.retention)
        self._handle = await event_log.consume(
            [self.topics.changes],
            group,
            self.handle,
            options=options,
            validate=lambda record: ChangeEvent.model_validate_json(record.value),
        )
        return self._handle

    async def stop(self) -> None:
        """Leave the consumer group."""
        if self._handle is not None:
            await self._handle.stop()
            self._handle = None
