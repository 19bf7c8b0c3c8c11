"""Prometheus metrics of bot executions (registered once, in the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["EXECUTIONS", "EXECUTION_SECONDS", "FHIR_CALLS", "WORKER_REPLACEMENTS"]

EXECUTIONS = Counter(
    "fhirbots_bot_executions_total", "Bot executions by result status.", ["status"]
)
EXECUTION_SECONDS = Histogram(
    "fhirbots_bot_execution_seconds",
    "Wall-clock time of bot executions.",
    # From a warm trivial bot (~1 ms) to the policy's timeout ceiling.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
FHIR_CALLS = Counter(
    "fhirbots_bot_fhir_calls_total", "FHIR calls made by bots.", ["method", "outcome"]
)
WORKER_REPLACEMENTS = Counter(
    "fhirbots_bot_worker_replacements_total", "Worker processes replaced, by reason.", ["reason"]
)
