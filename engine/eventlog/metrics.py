"""Prometheus metrics of the event log (both adapters); the dashboard reads lag separately."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCH_SECONDS",
    "CONSUMED",
    "DEADLETTERED",
    "HANDLER_FAILURES",
    "LAG_EVENTS",
    "LAG_SECONDS",
    "PUBLISHED",
    "REBALANCES",
]

PUBLISHED = Counter("fhirbots_eventlog_published_total", "Messages durably published.", ["topic"])
CONSUMED = Counter(
    "fhirbots_eventlog_consumed_total",
    "Records handled and committed by a consumer group.",
    ["topic", "group"],
)
DEADLETTERED = Counter(
    "fhirbots_eventlog_deadlettered_total",
    "Records copied to a dead-letter topic.",
    ["topic", "group"],
)
HANDLER_FAILURES = Counter(
    "fhirbots_eventlog_handler_failures_total",
    "Handler calls that raised (the batch is retried).",
    ["group"],
)
REBALANCES = Counter(
    "fhirbots_eventlog_rebalances_total", "Assignment changes seen by a group member.", ["group"]
)
BATCH_SECONDS = Histogram("fhirbots_eventlog_batch_seconds", "Time to handle one batch.", ["group"])
LAG_EVENTS = Gauge(
    "fhirbots_consumer_lag_events",
    "Records of a partition not yet committed by a consumer group.",
    ["group", "topic", "partition"],
)
LAG_SECONDS = Gauge(
    "fhirbots_consumer_lag_seconds",
    "Age of the oldest record of a partition not yet committed by a consumer group.",
    ["group", "topic", "partition"],
)
