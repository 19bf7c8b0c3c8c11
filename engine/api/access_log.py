"""The access log: one structured line per request, without query values.

A search's values are often patient data (``Patient?name=…&birthdate=…``), so the line names
the query's parameters and never their values.
"""

from __future__ import annotations

import structlog
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from fhirbots.engine.observability.tracing import trace_id_of
from fhirbots.engine.web.context import PRINCIPAL, TRACEPARENT_KEY

__all__ = ["AccessLog", "access_fields"]

log = structlog.get_logger("fhirbots.access")


def access_fields(request: BaseRequest, status: int, seconds: float) -> dict[str, object]:
    """The fields of one access-log line."""
    fields: dict[str, object] = {
        "method": request.method,
        "path": request.path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
    }
    if request.query:
        fields["params"] = sorted(set(request.query.keys()))
    caller = request.get(PRINCIPAL)
    if caller is not None:
        fields["project"] = caller.project
    traceparent = request.get(TRACEPARENT_KEY)
    if traceparent is not None:
        fields["trace_id"] = trace_id_of(traceparent)
    return fields


class AccessLog(AbstractAccessLogger):
    """aiohttp's access-log hook, writing :func:`access_fields` through structlog."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        log.info("request", **access_fields(request, response.status, time))
