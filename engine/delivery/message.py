"""The message channel: notifications published on a named topic of the event log.

The endpoint names a topic inside the project's namespace (``acme.lab-results.v1`` of project
``p1`` is published to ``project.p1.acme.lab-results.v1``, see
:func:`fhirbots.engine.delivery.channels.message_topic`); the engine's own names are refused.
The topic is created on first use; messages are keyed by ``project/subscription`` so one
subscription's notifications stay in order on one partition, with the event number and
traceparent in headers.
"""

from __future__ import annotations

import time

from fhirbots.engine.delivery.attempt import AttemptResult
from fhirbots.engine.delivery.channels import message_topic, topic_problem
from fhirbots.engine.eventlog.errors import EventLogError
from fhirbots.engine.eventlog.port import EventLog

__all__ = ["MessageChannel"]


class MessageChannel:
    """Publishes notification Bundles to event-log topics.

    Args:
        event_log: The engine's event log.
    """

    def __init__(self, event_log: EventLog) -> None:
        self._log = event_log
        self._created: set[str] = set()

    async def send(
        self, project: str, name: str, key: str, body: bytes, headers: dict[str, str]
    ) -> AttemptResult:
        """Publish ``body`` on ``project``'s topic ``name``; delivered once the log stored it
        durably."""
        started = time.perf_counter()
        problem = topic_problem(project, name)
        if problem is not None:
            return AttemptResult(False, error=problem, retryable=False)
        topic = message_topic(project, name)
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
