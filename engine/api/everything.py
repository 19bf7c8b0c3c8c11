"""``Patient/$everything`` over HTTP."""

from __future__ import annotations

from aiohttp import web

from fhirbots.engine.errors import NotFound

__all__ = ["everything_instance", "everything_type"]


async def everything_instance(request: web.Request) -> web.Response:
    """``GET Patient/{id}/$everything``."""
    raise NotFound(f"{request.path}: not yet served")


async def everything_type(request: web.Request) -> web.Response:
    """``GET Patient/$everything``."""
    raise NotFound(f"{request.path}: not yet served")
