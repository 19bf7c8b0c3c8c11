"""Query parameters of the non-search interactions (history, ``$everything``)."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from fhirbots.engine.errors import BadRequest

__all__ = ["int_param", "since_param"]


def int_param(request: web.Request, name: str, default: int, ceiling: int | None = None) -> int:
    """A non-negative integer parameter (at most ``ceiling``); 400 if it is not one."""
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer, not {raw!r}")
    value = int(raw)
    return min(value, ceiling) if ceiling is not None else value


def since_param(request: web.Request) -> datetime | None:
    """``_since``: an instant with a time zone; 400 if it is not one."""
    raw = request.query.get("_since")
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(f"_since must be an instant, not {raw!r}") from exc
    if moment.tzinfo is None:
        raise BadRequest(f"_since must carry a time zone: {raw!r}")
    return moment
