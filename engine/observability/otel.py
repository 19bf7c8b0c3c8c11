"""OpenTelemetry traces over OTLP/HTTP, when ``FHIRBOTS_OTLP_ENDPOINT`` names a collector.

Every span continues the W3C ``traceparent`` the engine already carries from the HTTP request
through the change event, the notification, the delivery attempt and the bot execution, so
that the write, the relay, the match, the delivery and the bot run of one change share one
trace id in the tracing backend (and with the ids the dashboard shows).

Off by default. Until :func:`configure` is called with an endpoint, :func:`span` returns one
shared do-nothing context manager and :func:`spans` likewise, and the OpenTelemetry packages
are not even imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

__all__ = ["configure", "enabled", "flush", "shutdown", "span", "spans"]

_NOTHING: AbstractContextManager[None] = contextlib.nullcontext()

_provider: Any = None
_tracer: Any = None


def enabled() -> bool:
    """Whether spans are recorded and exported."""
    return _tracer is not None


def configure(endpoint: str | None, service: str) -> bool:
    """Export spans to the OTLP/HTTP collector at ``endpoint`` (``http://host:4318``; the
    ``/v1/traces`` path is added unless given); nothing when None. True when configured."""
    global _provider, _tracer
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    _provider, _tracer = provider, provider.get_tracer("fhirbots")
    return True


def flush() -> None:
    """Export the spans ended so far (blocking; tests and shutdown)."""
    if _provider is not None:
        _provider.force_flush()


def shutdown() -> None:
    """Export what is left and stop exporting."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def _parent(traceparent: str | None) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if not traceparent:
        return None
    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def span(
    name: str, traceparent: str | None, **attributes: str | int | float | bool
) -> AbstractContextManager[None]:
    """A span called ``name``, a child of ``traceparent`` (a new trace when None), current
    while the block runs; a shared do-nothing context when tracing is off."""
    if _tracer is None:
        return _NOTHING
    return _span(name, traceparent, attributes)


@contextlib.contextmanager
def _span(name: str, traceparent: str | None, attributes: dict[str, Any]) -> Iterator[None]:
    with _tracer.start_as_current_span(name, context=_parent(traceparent), attributes=attributes):
        yield


def spans(
    name: str, traceparents: Iterable[str | None], **attributes: str | int | float | bool
) -> AbstractContextManager[None]:
    """One span per distinct trace, all ending with the block (a batch serving many traces,
    such as the relay publishing rows of many writes at once)."""
    if _tracer is None:
        return _NOTHING
    return _spans(name, traceparents, attributes)


@contextlib.contextmanager
def _spans(
    name: str, traceparents: Iterable[str | None], attributes: dict[str, Any]
) -> Iterator[None]:
    started = [
        _tracer.start_span(name, context=_parent(tp), attributes=attributes)
        for tp in dict.fromkeys(traceparents)
    ]
    try:
        yield
    finally:
        for each in started:
            each.end()
