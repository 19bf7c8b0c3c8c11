"""Compressed request bodies, decompressed within the body bound.

aiohttp's own decompression fills its buffer with everything a body inflates to before a
handler can refuse it: a 400 KB gzip body of spaces held 330 MB of memory on its way to a 413.
The API turns it off (``auto_decompress``) and inflates here instead, never past
``FHIRBOTS_MAX_REQUEST_BYTES``; the handlers then read the inflated body as usual.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from fhirbots.engine.errors import BadRequest, UnsupportedMediaType
from fhirbots.engine.fhir.limits import PayloadTooLarge

__all__ = ["HANDLER_ARGS", "inflate", "request_body_middleware"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HANDLER_ARGS = {"auto_decompress": False}
"""Arguments of aiohttp's request handler the API needs (see the module docstring)."""

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """``body`` decompressed from ``encoding``, refused past ``limit`` bytes.

    Raises:
        UnsupportedMediaType: an encoding other than gzip and deflate.
        PayloadTooLarge: the body inflates to more than ``limit`` bytes.
        BadRequest: the body is not what its encoding says.
    """
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or identity"
        )
    if encoding == "deflate" and body[:1] and body[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # raw deflate, as some clients send it
    inflater = zlib.decompressobj(wbits)
    try:
        inflated = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the request body is not valid {encoding}: {exc}") from exc
    if len(inflated) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(
            f"the request body inflates to more than {limit} bytes (FHIRBOTS_MAX_REQUEST_BYTES)"
        )
    if not inflater.eof:
        raise BadRequest(f"the request body is not valid {encoding}: it ends too soon")
    return inflated


@web.middleware
async def request_body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Inflate a compressed body (bounded) before any handler reads it."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raw = await request.read()  # still compressed: bounded by client_max_size
        # Handlers read the body through read(), text(), json() and post(), which all
        # return the body read() kept: keep the inflated one there instead.
        request._read_bytes = inflate(raw, encoding, request.client_max_size)
    return await handler(request)
