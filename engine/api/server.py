"""The HTTP server around the API application: limits on the request line and headers, answers
to malformed HTTP, and the access log.

aiohttp answers a request it cannot parse (a request line or header over its limit, a
duplicated ``Content-Type``, a body that claims gzip but is not) before any middleware runs, with
a plain-text body, and logs a multi-line traceback. :class:`ApiRunner` serves the same
application through a request handler that answers those with an OperationOutcome and logs one
structured line instead, and writes one access-log line per request.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from fhirbots.engine.api.access_log import AccessLog
from fhirbots.engine.errors import FhirError
from fhirbots.engine.fhir.outcome import outcome_for
from fhirbots.engine.settings import Settings
from fhirbots.engine.web.http import fhir_response

__all__ = ["ApiRunner", "malformed_reason"]

log = structlog.get_logger(__name__)

_REASON_CHARS = 200
"""How much of a parser's message an answer repeats (it may echo the request's own bytes)."""


def malformed_reason(exc: BaseException | None, message: str | None) -> str:
    """What was wrong with a request the HTTP parser refused, without echoing its bytes."""
    if isinstance(exc, LineTooLong):
        return (
            "the request line or a header field is too long (limits: FHIRBOTS_MAX_URL_BYTES, "
            "FHIRBOTS_MAX_HEADER_BYTES)"
        )
    if isinstance(exc, HttpProcessingError) and exc.message:
        text = exc.message
    else:
        text = message or (str(exc) if exc is not None else "")
    first = text.strip().splitlines()[0] if text.strip() else "malformed HTTP request"
    return first[:_REASON_CHARS]


class _OutcomeRequestHandler(RequestHandler):
    """aiohttp's request handler, answering what it cannot parse with an OperationOutcome."""

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the response has begun; no error answer can follow")
        if status >= 500:
            log.error("request failed", status=status, path=request.path, exc_info=exc is not None)
            error = FhirError("internal server error")
        else:
            reason = malformed_reason(exc, message)
            log.warning("malformed request", status=status, reason=reason, remote=request.remote)
            error = FhirError(f"malformed HTTP request: {reason}")
        error.status = status
        response = fhir_response(outcome_for(error), status=status)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """One structured line for what the handler could not finish (a client that went away
        while its body was read, a body that fails to decode after the answer was sent)."""
        exc = kw.get("exc_info")
        log.warning(
            "connection closed on error",
            error=type(exc).__name__ if isinstance(exc, BaseException) else str(args[:1]),
            detail=str(exc).strip().splitlines()[0][:_REASON_CHARS] if exc else None,
        )


class _OutcomeServer(web.Server):
    """An aiohttp server whose connections use :class:`_OutcomeRequestHandler`."""

    def __call__(self) -> RequestHandler:
        return _OutcomeRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """Runs the API application with the configured request limits and access log."""

    def __init__(self, app: web.Application, settings: Settings) -> None:
        kwargs: dict[str, Any] = {
            "max_line_size": settings.max_url_bytes,
            "max_field_size": settings.max_header_bytes,
        }
        if settings.access_log:
            kwargs["access_log_class"] = AccessLog
            kwargs["access_log"] = logging.getLogger("fhirbots.access")
        else:
            kwargs["access_log"] = None
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _OutcomeServer(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
