"""The overview: the last hour (or day) as charts, and its JSON API ``/api/stats``.

Every figure is read from the observatory store's windows (written by the statistics stage),
never by scanning a topic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from fhirbots.engine.dashboard.context import caller, deps, render
from fhirbots.engine.errors import BadRequest
from fhirbots.engine.observatory.model import WINDOW, Metric
from fhirbots.engine.observatory.windows import window_start

__all__ = ["RANGES", "routes", "stats"]

RANGES: dict[str, tuple[timedelta, timedelta]] = {
    "1h": (timedelta(hours=1), WINDOW),
    "24h": (timedelta(hours=24), timedelta(minutes=5)),
}
"""Range name -> (span, step): at most a few hundred points per series, which a browser
draws at once."""

_METRICS: tuple[Metric, ...] = ("changes", "notifications", "deliveries", "executions")


async def stats(request: web.Request) -> dict[str, Any]:
    """The figures of the overview for the caller's project, as plain data."""
    name = request.query.get("range", "1h")
    if name not in RANGES:
        raise BadRequest(f"range must be one of {', '.join(RANGES)}")
    span, step = RANGES[name]
    until = window_start(datetime.now(UTC), step) + step
    since = until - span
    project = caller(request).project
    store = deps(request).observatory
    out: dict[str, Any] = {
        "project": project,
        "range": name,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "step_seconds": step.total_seconds(),
        "metrics": {},
    }
    for metric in _METRICS:
        points = await store.series(project, metric, since, until, step)
        totals = await store.series(project, metric, since, until, until - since)
        out["metrics"][metric] = {
            "points": [
                {
                    "t": int(p.start.timestamp()),
                    "dims": list(p.dims),
                    "count": p.count,
                    "p50_ms": p.p50_ms,
                    "p99_ms": p.p99_ms,
                }
                for p in points
            ],
            "totals": [
                {"dims": list(t.dims), "count": t.count, "p50_ms": t.p50_ms, "p99_ms": t.p99_ms}
                for t in totals
            ],
        }
    if caller(request).admin:
        samples = await store.lag(since)
        out["lag"] = [
            {
                "group": s.group,
                "t": int(s.at.timestamp()),
                "events": s.events,
                "seconds": s.seconds,
            }
            for s in samples
        ]
    return out


async def stats_json(request: web.Request) -> web.Response:
    """``GET /api/stats?range=1h|24h``."""
    return web.json_response(await stats(request))


async def overview_page(request: web.Request) -> web.Response:
    """The overview page (its charts load ``/api/stats``)."""
    name = request.query.get("range", "1h")
    values = {"range": name if name in RANGES else "1h", "ranges": list(RANGES), "nav": "overview"}
    return render("overview.html", request, values)


def routes() -> list[web.RouteDef]:
    """Routes of the overview."""
    return [web.get("/", overview_page), web.get("/api/stats", stats_json)]
