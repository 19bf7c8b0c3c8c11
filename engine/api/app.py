"""The aiohttp application: middlewares (errors, tracing, metrics, authentication) and routes."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import Counter, Histogram

from fhirbots.engine.api import fhir, openapi, search
from fhirbots.engine.api.negotiation import negotiation_middleware
from fhirbots.engine.api.request_body import HANDLER_ARGS, request_body_middleware
from fhirbots.engine.api.tracing import tracing_middleware
from fhirbots.engine.errors import BadRequest, FhirError, Forbidden, MethodNotAllowed, NotFound
from fhirbots.engine.fhir.limits import PayloadTooLarge
from fhirbots.engine.fhir.outcome import outcome_for
from fhirbots.engine.fhir.scopes import scoped
from fhirbots.engine.observability.probes import READINESS, Readiness, livez, metrics, readyz
from fhirbots.engine.observability.tracing import TRACEPARENT, child_traceparent, trace_id_of
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.web.auth import Authenticator, Principal
from fhirbots.engine.web.context import PRINCIPAL, SERVICES, TRACEPARENT_KEY, Services
from fhirbots.engine.web.http import fhir_response
from fhirbots.engine.web.key_access import key_access_middleware

__all__ = ["AUTHENTICATOR", "OPEN_PATHS", "BrowserCredentials", "create_app"]

OPEN_PATHS = frozenset(
    {
        "/",
        f"{API_PATH}/metadata",
        f"{API_PATH}/openapi.json",
        "/healthz",
        "/livez",
        "/readyz",
        f"{API_PATH}/Subscription/$websocket",
    }
)
"""The only paths served without an API key, and only to GET (another method on one of them
is an interaction on a resource, e.g. ``PUT Subscription/$websocket``). The websocket
authenticates each binding with the short-lived token ``$get-ws-binding-token`` hands out to
an authenticated caller."""


class BrowserCredentials(Protocol):
    """How a signed-in dashboard page calls the FHIR API without holding a key: its session
    cookie (with the session's CSRF token in a header) stands for the key it signed in with."""

    async def principal(self, request: web.Request) -> Principal | None:
        """The caller, when the request carries a session and no ``Authorization`` header
        (None when it carries neither).

        Raises:
            Unauthorized: The session is unknown or ended.
            Forbidden: The CSRF token is missing or wrong.
        """
        ...

    async def audit(self, request: web.Request, caller: Principal, status: int) -> None:
        """Record an action a session took (every method but GET and HEAD)."""
        ...


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
BROWSER = web.AppKey("browser_credentials", BrowserCredentials)
SELF_AUTHENTICATING = web.AppKey("self_authenticating", tuple[str, ...])
"""Path prefixes whose handlers authenticate callers themselves (the dashboard)."""

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
    except web.HTTPRedirection:
        raise  # a redirect (the dashboard's) is an answer, not an error
    except web.HTTPNotFound:
        response = fhir_response(outcome_for(NotFound(f"no route for {request.path}")), status=404)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SERVICES].settings.max_request_bytes
        too_large = PayloadTooLarge(
            f"the request body is larger than {limit} bytes (FHIRBOTS_MAX_REQUEST_BYTES)"
        )
        response = fhir_response(outcome_for(too_large), status=413)
    except web.HTTPException as exc:
        error = FhirError(exc.reason)
        error.status = exc.status
        response = fhir_response(outcome_for(error), status=exc.status)
    except RequestPayloadError as exc:
        detail = str(exc).strip().splitlines()[-1].strip()
        unreadable = BadRequest(f"the request body cannot be read: {detail}")
        response = fhir_response(outcome_for(unreadable), status=400)
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
    """Every path but :data:`OPEN_PATHS` needs ``Authorization: Bearer <key>`` (or, from a
    dashboard page, its session and CSRF token)."""
    opened = request.path in OPEN_PATHS and request.method in ("GET", "HEAD")
    if opened or request.path.startswith(request.app[SELF_AUTHENTICATING]):
        return await handler(request)
    authorization = request.headers.get("Authorization")
    browser = request.app.get(BROWSER)
    caller = None
    if authorization is None and browser is not None:
        caller = await browser.principal(request)
    if caller is None:
        caller = await request.app[AUTHENTICATOR].authenticate(authorization)
        request[PRINCIPAL] = caller
        with scoped(caller.search_scope()):  # what its searches may reach (fhir.scopes)
            return await handler(request)
    request[PRINCIPAL] = caller
    with scoped(caller.search_scope()):
        response = await handler(request)
    if browser is not None and request.method not in ("GET", "HEAD"):
        await browser.audit(request, caller, response.status)
    return response


async def operator_metrics(request: web.Request) -> web.StreamResponse:
    """``/metrics`` for an admin key (the engine's operator); 403 for a project's own keys."""
    if not request[PRINCIPAL].admin:
        raise Forbidden("/metrics is for the engine's operator (an admin key)")
    return await metrics(request)


def create_app(
    services: Services,
    authenticator: Authenticator,
    extra_routes: Sequence[web.RouteDef] = (),
    *,
    browser: BrowserCredentials | None = None,
    self_authenticating: tuple[str, ...] = (),
    readiness: Readiness | None = None,
) -> web.Application:
    """The HTTP application serving ``services``.

    ``extra_routes`` (operations such as ``Subscription/$explain``) go before the generic FHIR
    routes, so a ``$operation`` segment is never taken for an id. ``browser`` lets dashboard
    pages call the API with their session; paths under ``self_authenticating`` (a mounted
    dashboard) authenticate their callers themselves. ``/readyz`` reports ``readiness``.
    """
    app = web.Application(
        middlewares=[
            errors_middleware,
            tracing_middleware,
            negotiation_middleware,
            auth_middleware,
            request_body_middleware,  # after authentication: inflating is work
            key_access_middleware,  # a scoped key's scope; no bot tags in REST writes
        ],
        client_max_size=services.settings.max_request_bytes,
        handler_args=HANDLER_ARGS,
    )
    app[SERVICES] = services
    app[AUTHENTICATOR] = authenticator
    app[SELF_AUTHENTICATING] = self_authenticating
    if browser is not None:
        app[BROWSER] = browser
    if readiness is not None:
        app[READINESS] = readiness
    app.router.add_get("/healthz", livez)  # the older name of /livez
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    # Authenticated here, unlike the management port, and for the operator only: the metrics
    # of the process name every project's topics and counts.
    app.router.add_get("/metrics", operator_metrics)
    app.add_routes(extra_routes)
    app.add_routes(openapi.routes())
    app.add_routes(search.routes())
    app.add_routes(fhir.routes())
    return app
