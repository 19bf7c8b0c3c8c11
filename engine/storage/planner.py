"""What a write does, decided once for both storage engines.

Given the current version of a resource (or none) and a write operation, :func:`plan_write`
returns the new version, the change event and whether it is a creation. It does no I/O; the
adapters read the current row, call it inside their transaction and store what it returns.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fhirbots.engine.errors import BadRequest, PreconditionFailed
from fhirbots.engine.storage.model import (
    CreateOp,
    DeleteOp,
    StoredResource,
    UpdateOp,
    WriteContext,
    WriteOp,
    WriteResult,
)
from fhirbots.schemas.events import ChangeEvent, Interaction

__all__ = ["format_instant", "new_id", "op_target", "plan_write"]

_VERSION_7 = 0x7 << 76 | 0b10 << 62
"""The version (7) and variant (RFC 9562) bits of a UUIDv7."""
_RANDOM_BITS = (1 << 80) - 1 & ~(0xF << 76) & ~(0b11 << 62)
"""The 74 bits under the timestamp that are random (all but version and variant)."""


def new_id() -> str:
    """A server-assigned resource id: a time-ordered UUID (version 7, RFC 9562).

    Ids that grow with time land next to each other in every index keyed by id (the resources
    table, the history, the search index), so a write touches a few hot pages instead of one
    random page per index. The 74 random bits keep ids unguessable and unique.
    """
    millis = time.time_ns() // 1_000_000
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10)) & _RANDOM_BITS
    return str(uuid.UUID(int=value | _VERSION_7))


def format_instant(moment: datetime) -> str:
    """FHIR instant text in UTC with microseconds; sorts in time order as text."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def op_target(op: WriteOp) -> tuple[str, str]:
    """The ``(type, id)`` an operation writes; a create without id gets a new one here."""
    if isinstance(op, CreateOp):
        resource_type = op.resource.get("resourceType")
        if not isinstance(resource_type, str):
            raise BadRequest("resource has no resourceType")
        return resource_type, op.id or new_id()
    return op.resource_type, op.id


@dataclass(frozen=True)
class _Change:
    interaction: Interaction
    stored: StoredResource


def _with_meta(
    resource: dict[str, Any], resource_id: str, version: int, now: datetime
) -> dict[str, Any]:
    content = dict(resource)
    content["id"] = resource_id
    meta = dict(content.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(now)
    content["meta"] = meta
    return content


def _check_version(op: UpdateOp | DeleteOp, current: StoredResource | None) -> None:
    if op.if_match is None:
        return
    have = current.version_id if current is not None else None
    if have != op.if_match:
        raise PreconditionFailed(
            f"{op.resource_type}/{op.id}: If-Match names version {op.if_match}, "
            f"the current version is {have if have is not None else 'none'}"
        )


def _change(
    op: WriteOp, target: tuple[str, str], current: StoredResource | None, now: datetime
) -> _Change | None:
    resource_type, resource_id = target
    version = (current.version_id if current is not None else 0) + 1
    if isinstance(op, DeleteOp):
        _check_version(op, current)
        if current is None or current.deleted:
            return None
        tombstone = StoredResource(resource_type, resource_id, version, now, True, None)
        return _Change("delete", tombstone)
    if isinstance(op, UpdateOp):
        _check_version(op, current)
    exists = current is not None and not current.deleted
    content = _with_meta(op.resource, resource_id, version, now)
    stored = StoredResource(resource_type, resource_id, version, now, False, content)
    return _Change("update" if exists else "create", stored)


def plan_write(
    op: WriteOp,
    target: tuple[str, str],
    current: StoredResource | None,
    *,
    project: str,
    context: WriteContext,
    now: datetime | None = None,
    generation: int = 0,
) -> WriteResult:
    """Decide the new version and change event of ``op`` applied over ``current``.

    Args:
        op: the operation.
        target: ``(type, id)`` from :func:`op_target`.
        current: the current version (a tombstone if deleted), or None if there never was one.
        project: the project that owns the resource.
        context: author, trace and causation of the write.
        now: commit time; must not be earlier than ``current.last_updated``.
        generation: the project's configuration generation (see ``ChangeEvent``).

    Raises:
        PreconditionFailed: ``If-Match`` does not name the current version.
    """
    moment = now or datetime.now(UTC)
    if current is not None and moment <= current.last_updated:
        # Keeps lastUpdated strictly increasing per resource even if the clock steps back.
        moment = current.last_updated + timedelta(microseconds=1)
    change = _change(op, target, current, moment)
    if change is None:
        return WriteResult(stored=current, event=None)
    previous = current.content if current is not None and not current.deleted else None
    event = ChangeEvent(
        event_id=str(uuid.uuid4()),
        project=project,
        interaction=change.interaction,
        resource_type=target[0],
        resource_id=target[1],
        version_id=str(change.stored.version_id),
        resource=change.stored.content,
        previous=previous,
        time=moment,
        author=context.author,
        traceparent=context.traceparent,
        causation=context.causation,
        config_generation=generation,
    )
    return WriteResult(stored=change.stored, event=event, created=change.interaction == "create")
