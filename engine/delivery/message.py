"""The message channel: notifications published on a named topic of the event log.

The endpoint names the topic (``[A-Za-z0-9._-]``, e.g. ``acme.lab-results.v1``). The topic is
created on first use; messages are keyed by ``project/subscription`` so one subscription's
notifications stay in order on one partition, with the event number and traceparent in
headers.
"""

from __future__ import annotations

import re
import time

from fhirbots.engine.delivery.attempt import AttemptResult
from fhirbots.engine.eventlog.errors import EventLogError
from fhirbots.engine.eventlog.port import EventLog

__all__ = ["MESSAGE_TOPIC", "MessageChannel"]

MESSAGE_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
"""Allowed topic names (Kafka's legal characters and length limit, minus a margin)."""

RESERVED_PREFIX = "fhir."
"""The engine's own topics may not be written by a subscription."""


class MessageChannel:
    """Publishes notification Bundles to event-log topics.

    Args:
        event_log: The engine's event log.
    """

    def __init__(self, event_log: EventLog) -> None:
        self._log = event_log
        self._created: set[str] = set()

    async def send(
        self, topic: str, key: str, body: bytes, headers: dict[str, str]
    ) -> AttemptResult:
        """Publish ``body`` on ``topic``; delivered once the log stored it durably."""
        started = time.perf_counter()
        if not MESSAGE_TOPIC.match(topic) or topic.startswith(RESERVED_PREFIX):
            return AttemptResult(
                False,
                error=f"message endpoint {topic!r} is not an allowed topic name",
                retryable=False,
            )
        try:
            if topic not in self._created:
                await self._log.create_topic(topic)
                self._created.add(topic)
            encoded = tuple((name, value.encode()) for name, value in headers.items())
            await self._log.publish(topic, key, body, encoded)
        except EventLogError as exc:
            return AttemptResult(
                False, error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started
            )
        return AttemptResult(True, seconds=time.perf_counter() - started)
