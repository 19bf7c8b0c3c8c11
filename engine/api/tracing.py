"""The HTTP request's span, when OpenTelemetry tracing is on (:mod:`..observability.otel`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from fhirbots.engine.observability import otel
from fhirbots.engine.web.context import TRACEPARENT_KEY

__all__ = ["tracing_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def tracing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A span per request, continuing the request's ``traceparent`` (set by the errors
    middleware before this one runs); a plain call when tracing is off."""
    if not otel.enabled():
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    with otel.span(
        f"HTTP {request.method} {route}",
        request.get(TRACEPARENT_KEY),
        **{"http.request.method": request.method, "url.path": request.path},
    ):
        return await handler(request)
