"""Content negotiation: the API answers in FHIR JSON only, so a client that accepts only
something else (``application/fhir+xml``, ``_format=xml``) gets 406, never JSON with 200."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from fhirbots.engine.errors import FhirError
from fhirbots.engine.settings import API_PATH

__all__ = ["NotAcceptable", "accepts_json", "negotiation_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_OWN_MEDIA = ("/$websocket", "/$execute")
"""Endpoints whose answers are not FHIR JSON by nature: the websocket, and a bot's output
(``$execute`` and its job URL answer with what the bot returned, text included)."""

_JSON_FORMATS = frozenset(
    {"json", "application/json", "application/fhir+json", "application/json+fhir"}
)
_JSON_RANGES = _JSON_FORMATS | {"*/*", "application/*"}


class NotAcceptable(FhirError):
    """The client accepts no media type the API answers with (406)."""

    status = 406
    code = "not-supported"


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            ranges.append((media.lower(), quality))
    return ranges


def accepts_json(accept: str | None, format_param: str | None) -> bool:
    """Whether a client with this ``Accept`` header and ``_format`` takes FHIR JSON
    (``_format`` overrides ``Accept``, as FHIR says)."""
    if format_param is not None:
        return format_param.strip().lower().split(";")[0] in _JSON_FORMATS
    if not accept or not accept.strip():
        return True
    return any(media in _JSON_RANGES and q > 0 for media, q in _media_ranges(accept))


@web.middleware
async def negotiation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse, under the API path, a request whose client would not take FHIR JSON."""
    own_media = request.path.endswith(_OWN_MEDIA) or "/$job/" in request.path
    accept, format_param = request.headers.get("Accept"), request.query.get("_format")
    if (
        request.path.startswith(API_PATH)
        and not own_media
        and not accepts_json(accept, format_param)
    ):
        raise NotAcceptable(
            "this server answers in FHIR JSON only (application/fhir+json); "
            f"Accept {accept!r} and _format {format_param!r} ask for something else"
        )
    return await handler(request)
