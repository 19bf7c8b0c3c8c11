"""Prometheus metrics of the FHIR service."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["WRITES"]

WRITES = Counter(
    "fhirbots_fhir_writes_total",
    "Resource versions committed (each one a change event), by interaction and type.",
    ["interaction", "type"],
)
