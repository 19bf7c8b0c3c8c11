"""``Patient/$everything``: a patient's record, the patient and every resource of the patient's
compartment (:mod:`~fhirbots.engine.fhir.compartment`), as one paged list.

Resources come in a stable order, the patient first, then by type and id, so ``_count`` and
``_offset`` page through them like a search. ``_type`` narrows the types; ``_since`` keeps
resources last updated at or after an instant. Resources the compartment reaches only by a
reference from a member (the Practitioner of an Encounter, a Medication) are not included, as
with Medplum. A scoped key sees the types its scope may search, nothing else.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from fhirbots.engine.fhir.compartment import PATIENT_COMPARTMENT
from fhirbots.engine.fhir.scopes import SEARCH, current_scope
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.storage.model import StoredResource
from fhirbots.subscriptions.search import Registry

__all__ = ["EverythingPage", "patient_everything"]


@dataclass(frozen=True)
class EverythingPage:
    """One page of the record and the number of resources in all pages."""

    resources: list[StoredResource]
    total: int


def _allowed(resource_type: str, types: Collection[str] | None) -> bool:
    scope = current_scope()
    if scope is not None and not scope.allows(resource_type, SEARCH):
        return False
    return types is None or resource_type in types


async def _members(
    service: FhirService,
    registry: Registry,
    project: str,
    patients: Sequence[str],
    types: Collection[str] | None,
) -> list[tuple[str, str]]:
    storage = service.storage
    stored_types = await storage.count_by_type(project)
    targets = [("Patient", p) for p in patients]
    keys: set[tuple[str, str]] = set()
    for resource_type, codes in PATIENT_COMPARTMENT.items():
        if not stored_types.get(resource_type) or not _allowed(resource_type, types):
            continue
        params = [
            code
            for code in codes
            if (definition := registry.get(resource_type, code)) is not None
            and definition.type == "reference"
        ]
        if params:
            keys |= await storage.revinclude_sources(project, resource_type, params, targets)
    first = [("Patient", p) for p in patients] if _allowed("Patient", types) else []
    return first + sorted(keys - set(first))


async def _fetch(
    service: FhirService, project: str, keys: Sequence[tuple[str, str]]
) -> list[StoredResource]:
    by_type: dict[str, list[str]] = {}
    for resource_type, resource_id in keys:
        by_type.setdefault(resource_type, []).append(resource_id)
    found: dict[tuple[str, str], StoredResource] = {}
    for resource_type, ids in by_type.items():
        for stored in await service.storage.current_by_ids(project, resource_type, ids):
            found[(stored.resource_type, stored.id)] = stored
    return [found[key] for key in keys if key in found]


async def patient_everything(
    service: FhirService,
    registry: Registry,
    project: str,
    patient_id: str | None,
    *,
    types: Collection[str] | None = None,
    since: datetime | None = None,
    count: int,
    offset: int = 0,
) -> EverythingPage:
    """The page ``offset`` to ``offset + count`` of one patient's record (404 or 410 if the
    patient is unknown or deleted), or of every patient's when ``patient_id`` is None."""
    if patient_id is not None:
        await service.read(project, "Patient", patient_id)
        patients = [patient_id]
    else:
        patients = [p.id for p in await service.storage.current_resources(project, "Patient")]
    keys = await _members(service, registry, project, patients, types)
    if since is None:
        return EverythingPage(
            await _fetch(service, project, keys[offset : offset + count]), len(keys)
        )
    recent = [r for r in await _fetch(service, project, keys) if r.last_updated >= since]
    return EverythingPage(recent[offset : offset + count], len(recent))
