"""HTTP helpers shared by the API's handlers: JSON bodies, FHIR media types, headers."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import Any

import orjson
from aiohttp import web

from fhirbots.engine.errors import BadRequest, UnsupportedMediaType
from fhirbots.engine.fhir.patch import PATCH_MEDIA_TYPES
from fhirbots.engine.storage.model import StoredResource
from fhirbots.engine.web.context import services

__all__ = [
    "FHIR_JSON",
    "base_url",
    "fhir_response",
    "http_date",
    "prefer",
    "read_json",
    "version_headers",
]

FHIR_JSON = "application/fhir+json"
"""The media type of every FHIR response."""

_ACCEPTED = {FHIR_JSON, "application/json"}


def http_date(moment: datetime) -> str:
    """RFC 7231 date, as in ``Last-Modified``."""
    return format_datetime(moment, usegmt=True)


def base_url(request: web.Request) -> str:
    """The API's base URL for links in the answer to ``request``: the configured public URL,
    or the API at the origin the client reached (see
    :meth:`fhirbots.engine.settings.Settings.base_url`)."""
    return services(request).settings.base_url(f"{request.scheme}://{request.host}")


async def read_json(request: web.Request, *, patch: bool = False) -> Any:
    """The request body as JSON; 415 for a wrong media type, 400 for malformed JSON."""
    media = request.content_type
    allowed = PATCH_MEDIA_TYPES if patch else _ACCEPTED
    if media not in allowed:
        wanted = " or ".join(sorted(allowed))
        raise UnsupportedMediaType(f"Content-Type {media!r} is not supported; send {wanted}")
    body = await request.read()
    if not body:
        raise BadRequest("the request body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from exc


def prefer(request: web.Request, name: str, default: str) -> str:
    """One preference of the ``Prefer`` header (RFC 7240), e.g. ``return`` or ``handling``."""
    for part in request.headers.get("Prefer", "").replace(",", ";").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip('"')
    return default


def version_headers(stored: StoredResource, location: str | None = None) -> dict[str, str]:
    """ETag and Last-Modified of a stored version (and Location, when given)."""
    headers = {
        "ETag": f'W/"{stored.version_id}"',
        "Last-Modified": http_date(stored.last_updated),
    }
    if location is not None:
        headers["Location"] = location
    return headers


def fhir_response(
    body: dict[str, Any] | None, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A FHIR JSON response (an empty body when ``body`` is None)."""
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers=headers,
        content_type=FHIR_JSON,
        charset="utf-8",
    )
