"""The trace view: from any step (a change event, a notification, a delivery attempt, a bot
execution), the whole causation chain it belongs to, as a tree with timings.

The statistics stage indexes a step per record (:class:`ActivityRow`) as it consumes them:
its trace id, what caused it (``parent``), when and how long, and where its full record is in
the log. A write's change is the root; its notifications hang below it, each delivery
attempt below its notification, an execution below the notification that triggered it, and
the writes an execution made below the execution, and so on. Only the caller's project.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from fhirbots.engine.dashboard.context import caller, deps, render
from fhirbots.engine.dashboard.events import mount_of, record_link, trace_link
from fhirbots.engine.errors import NotFound
from fhirbots.engine.observatory.model import ActivityRow
from fhirbots.engine.observatory.store import ObservatoryStore
from fhirbots.schemas.executions import BotExecutionRecord

__all__ = ["TraceNode", "routes", "trace_of", "tree"]


@dataclass
class TraceNode:
    """A step with the steps it caused."""

    row: ActivityRow
    children: list[TraceNode] = field(default_factory=list)
    execution: BotExecutionRecord | None = None


def tree(rows: list[ActivityRow]) -> list[TraceNode]:
    """The steps of a trace as trees through ``parent``, each level in time order.

    A step whose parent is not in the trace (not indexed yet, or older than the retention)
    is a root of its own.
    """
    nodes: dict[str, TraceNode] = {}
    for row in sorted(rows, key=lambda r: r.at):
        nodes.setdefault(row.ref, TraceNode(row))
    roots: list[TraceNode] = []
    for node in nodes.values():
        parent = nodes.get(node.row.parent) if node.row.parent else None
        if parent is not None and parent is not node:
            parent.children.append(node)
        else:
            roots.append(node)
    return roots


def _walk(nodes: list[TraceNode]) -> list[TraceNode]:
    out: list[TraceNode] = []
    for node in nodes:
        out.append(node)
        out.extend(_walk(node.children))
    return out


def _execution_json(record: BotExecutionRecord) -> dict[str, Any]:
    return {
        "status": record.status,
        "trigger": record.trigger,
        "bot_version": record.bot_version,
        "fhir_calls": record.fhir_calls,
        "input": record.input,
        "logs": record.logs,
        "output": record.output,
        "error": record.error,
    }


def _node_json(node: TraceNode, start: datetime, mount: str, focus: str) -> dict[str, Any]:
    row = node.row
    out: dict[str, Any] = {
        "kind": row.kind,
        "ref": row.ref,
        "parent": row.parent,
        "time": row.at.isoformat(),
        "offset_ms": round((row.at - start).total_seconds() * 1000, 3),
        "duration_ms": row.duration_ms,
        "summary": row.summary,
        "focus": row.ref == focus,
        "links": {"trace": trace_link(mount, row.ref)},
        "children": [_node_json(c, start, mount, focus) for c in node.children],
    }
    if row.topic is not None and row.partition is not None and row.offset is not None:
        out["record"] = {"topic": row.topic, "partition": row.partition, "offset": row.offset}
        out["links"]["record"] = record_link(mount, row.topic, row.partition, row.offset)
    if node.execution is not None:
        out["execution"] = _execution_json(node.execution)
        out["links"]["execution"] = f"{mount}/executions/{row.ref}"
    return out


async def trace_of(store: ObservatoryStore, project: str, ref: str) -> tuple[str, list[TraceNode]]:
    """The trace id of step ``ref`` of ``project`` and the trees of its trace, with the kept
    record of each execution in it.

    Raises:
        NotFound: No step ``ref`` in this project.
    """
    trace_id = await store.trace_of(project, ref)
    if trace_id is None:
        raise NotFound(
            f"no step {ref} in this project's traces (steps are indexed a moment after they happen)"
        )
    roots = tree(await store.trace(project, trace_id))
    for node in _walk(roots):
        if node.row.kind == "execution":
            node.execution = await store.execution(project, node.row.ref)
    return trace_id, roots


async def _trace_json(request: web.Request) -> dict[str, Any]:
    ref = request.match_info["ref"]
    trace_id, roots = await trace_of(deps(request).observatory, caller(request).project, ref)
    steps = _walk(roots)
    start = min(n.row.at for n in steps)
    end = max(n.row.at.timestamp() + (n.row.duration_ms or 0) / 1000 for n in steps)
    mount = mount_of(request)
    return {
        "trace_id": trace_id,
        "ref": ref,
        "start": start.isoformat(),
        "span_ms": round((end - start.timestamp()) * 1000, 3),
        "steps": len(steps),
        "roots": [_node_json(r, start, mount, ref) for r in roots],
    }


async def trace_json(request: web.Request) -> web.Response:
    """``GET /api/trace/{ref}``: the trace of a step as nested nodes."""
    return web.json_response(await _trace_json(request))


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


async def trace_page(request: web.Request) -> web.Response:
    """``/trace/{ref}``: the causation chain as a tree."""
    values = {"nav": "events", "trace": await _trace_json(request), "pretty": _pretty}
    return render("trace.html", request, values)


def routes() -> list[web.RouteDef]:
    """Routes of the trace view."""
    return [web.get("/trace/{ref}", trace_page), web.get("/api/trace/{ref}", trace_json)]
