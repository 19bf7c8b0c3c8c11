"""Bounds on what one request may make the engine hold: bytes per resource, entries per Bundle,
bytes of the reads a batch or transaction answers with.

The HTTP server bounds the request line, headers and body (:mod:`fhirbots.engine.api.server`);
these bounds apply wherever a request is carried out, so the REST API and the bots' gateway
share them. Each refusal names the setting that sets the bound (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fhirbots.engine.errors import FhirError
from fhirbots.engine.settings import Settings

__all__ = ["PayloadTooLarge", "RequestLimits", "ResponseBudget", "ResponseTooLarge"]


class PayloadTooLarge(FhirError):
    """A request larger than a configured bound (413)."""

    status = 413
    code = "too-long"


class ResponseTooLarge(FhirError):
    """A request whose answer would be larger than a configured bound."""

    status = 400
    code = "too-costly"


_DEFAULTS = Settings()


@dataclass(frozen=True)
class RequestLimits:
    """The bounds, as configured (see the ``FHIRBOTS_MAX_*`` settings)."""

    max_resource_bytes: int = _DEFAULTS.max_resource_bytes
    max_bundle_entries: int = _DEFAULTS.max_bundle_entries
    max_response_bytes: int = _DEFAULTS.max_response_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLimits:
        """The bounds ``settings`` configure."""
        return cls(
            max_resource_bytes=settings.max_resource_bytes,
            max_bundle_entries=settings.max_bundle_entries,
            max_response_bytes=settings.max_response_bytes,
        )

    def check_resources(self, resources: Sequence[Any], where: Sequence[str] | None = None) -> int:
        """Refuse a resource larger than ``max_resource_bytes`` as JSON (413 naming it).

        Returns:
            The bytes of all of them, as JSON.
        """
        total = 0
        for i, resource in enumerate(resources):
            size = len(orjson.dumps(resource))
            total += size
            if size > self.max_resource_bytes:
                label = where[i] if where is not None else "the resource"
                raise PayloadTooLarge(
                    f"{label} is {size} bytes; at most {self.max_resource_bytes} are accepted "
                    "(FHIRBOTS_MAX_RESOURCE_BYTES)"
                )
        return total

    def check_entries(self, kind: str, count: int) -> None:
        """Refuse a batch or transaction of more than ``max_bundle_entries`` entries."""
        if count > self.max_bundle_entries:
            raise PayloadTooLarge(
                f"the {kind} has {count} entries; at most {self.max_bundle_entries} are "
                "accepted (FHIRBOTS_MAX_BUNDLE_ENTRIES)"
            )


class ResponseBudget:
    """The bytes a batch or transaction may still answer with; reads spend it."""

    def __init__(self, limits: RequestLimits) -> None:
        self._limit = limits.max_response_bytes
        self._left = limits.max_response_bytes
        self._reads = 0

    def spend(self, answer: Any) -> None:
        """Account for one read's answer; past the budget the whole request is refused."""
        self._reads += 1
        self._left -= len(orjson.dumps(answer))
        if self._left < 0:
            raise ResponseTooLarge(
                f"the Bundle's first {self._reads} reads answer with more than {self._limit} "
                "bytes (FHIRBOTS_MAX_RESPONSE_BYTES); ask for smaller pages or fewer reads"
            )
