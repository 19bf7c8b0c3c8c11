"""Prometheus metrics of delivery."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["ACCEPTED", "ATTEMPTS", "ATTEMPT_SECONDS", "DEAD_LETTERS", "LANES", "TRANSITIONS"]

ACCEPTED = Counter(
    "fhirbots_delivery_accepted_total", "Notifications accepted with a new event number"
)
ATTEMPTS = Counter("fhirbots_delivery_attempts_total", "Delivery attempts", ["channel", "outcome"])
ATTEMPT_SECONDS = Histogram(
    "fhirbots_delivery_attempt_seconds",
    "Duration of delivery attempts",
    ["channel"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30),
)
DEAD_LETTERS = Counter("fhirbots_delivery_dead_letters_total", "Notifications dead-lettered")
TRANSITIONS = Counter(
    "fhirbots_delivery_status_transitions_total", "Subscription status changes", ["to"]
)
LANES = Gauge("fhirbots_delivery_lanes", "Subscriptions with a running delivery lane")
