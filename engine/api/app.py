"""The aiohttp application: middlewares (errors, tracing, metrics, authentication) and routes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from fhirbots.engine.api import fhir, search
from fhirbots.engine.errors import FhirError, MethodNotAllowed, NotFound
from fhirbots.engine.fhir.outcome import outcome_for
from fhirbots.engine.observability.tracing import TRACEPARENT, child_traceparent, trace_id_of
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.web.auth import Authenticator
from fhirbots.engine.web.context import PRINCIPAL, SERVICES, TRACEPARENT_KEY, Services
from fhirbots.engine.web.http import fhir_response

__all__ = ["AUTHENTICATOR", "OPEN_PATHS", "create_app"]

OPEN_PATHS = frozenset({f"{API_PATH}/metadata", "/healthz", f"{API_PATH}/Subscription/$websocket"})
"""The only paths served without an API key. The websocket authenticates each binding with the
short-lived token ``$get-ws-binding-token`` hands out to an authenticated caller."""

AUTHENTICATOR = web.AppKey("authenticator", Authenticator)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

log = structlog.get_logger(__name__)

REQUESTS = Counter("fhirbots_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "fhirbots_http_request_seconds",
    "HTTP request latency",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes an OperationOutcome with its status; timing and tracing too."""
    started = time.perf_counter()
    traceparent = child_traceparent(request.headers.get(TRACEPARENT))
    request[TRACEPARENT_KEY] = traceparent
    structlog.contextvars.bind_contextvars(trace_id=trace_id_of(traceparent))
    try:
        response = await handler(request)
    except FhirError as exc:
        response = fhir_response(outcome_for(exc), status=exc.status)
    except web.HTTPMethodNotAllowed as exc:
        refused = MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        response = fhir_response(
            outcome_for(refused), status=405, headers={"Allow": ",".join(exc.allowed_methods)}
        )
    except web.HTTPNotFound:
        response = fhir_response(outcome_for(NotFound(f"no route for {request.path}")), status=404)
    except web.HTTPException as exc:
        error = FhirError(exc.reason)
        error.status = exc.status
        response = fhir_response(outcome_for(error), status=exc.status)
    except Exception:
        log.exception("unhandled error", method=request.method, path=request.path)
        response = fhir_response(outcome_for(FhirError("internal server error")), status=500)
    finally:
        structlog.contextvars.unbind_contextvars("trace_id")
    response.headers[TRACEPARENT] = traceparent
    REQUESTS.labels(request.method, _route_name(request), str(response.status)).inc()
    LATENCY.labels(request.method).observe(time.perf_counter() - started)
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every path but :data:`OPEN_PATHS` needs ``Authorization: Bearer <key>``."""
    if request.path not in OPEN_PATHS:
        authenticator = request.app[AUTHENTICATOR]
        request[PRINCIPAL] = await authenticator.authenticate(request.headers.get("Authorization"))
    return await handler(request)


async def healthz(_: web.Request) -> web.Response:
    """Liveness: the process serves requests."""
    return web.json_response({"status": "ok"})


async def metrics(_: web.Request) -> web.Response:
    """Prometheus metrics (authenticated like the rest of the API)."""
    response = web.Response(body=generate_latest())
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def create_app(
    services: Services,
    authenticator: Authenticator,
    extra_routes: Sequence[web.RouteDef] = (),
) -> web.Application:
    """The HTTP application serving ``services``.

    ``extra_routes`` (operations such as ``Subscription/$explain``) go before the generic FHIR
    routes, so a ``$operation`` segment is never taken for an id.
    """
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=64 * 1024**2
    )
    app[SERVICES] = services
    app[AUTHENTICATOR] = authenticator
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.add_routes(extra_routes)
    app.add_routes(search.routes())
    app.add_routes(fhir.routes())
    return app
