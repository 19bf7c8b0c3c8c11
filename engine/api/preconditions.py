"""Conditional reads: ``If-None-Match`` and ``If-Modified-Since`` answered with 304.

A client that already holds a version sends its ETag (``W/"3"``, or ``*`` for any) or the
time it fetched it; when the stored version is that one (or older than that time), the answer
is ``304 Not Modified`` with the version's headers and no body.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from aiohttp import web

from fhirbots.engine.storage.model import StoredResource
from fhirbots.engine.web.http import version_headers

__all__ = ["not_modified"]


def _etag_matches(header: str, stored: StoredResource) -> bool:
    for tag in header.split(","):
        text = tag.strip()
        if text == "*" or text.removeprefix("W/").strip('"') == str(stored.version_id):
            return True
    return False


def _unchanged_since(header: str, stored: StoredResource) -> bool:
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False  # an unreadable date is ignored, as RFC 9110 says
    if moment.tzinfo is None:
        return False
    # HTTP dates have whole seconds: a version from within the named second is not newer.
    return stored.last_updated.replace(microsecond=0) <= moment


def not_modified(request: web.Request, stored: StoredResource) -> web.Response | None:
    """The 304 answer to a read of ``stored``, when the request's preconditions ask for it.

    ``If-None-Match`` wins over ``If-Modified-Since`` when both are sent (RFC 9110 13.2.2).
    """
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        unchanged = _etag_matches(if_none_match, stored)
    else:
        since = request.headers.get("If-Modified-Since")
        unchanged = since is not None and _unchanged_since(since, stored)
    if not unchanged:
        return None
    return web.Response(status=304, headers=version_headers(stored))
