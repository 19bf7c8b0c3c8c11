"""Required bindings: a ``code`` element bound to a fixed list of codes holds one of them.

The R4B models of fhir.resources keep each such list in the field's metadata
(``json_schema_extra["enum_values"]``, e.g. ``Patient.gender``: male, female, other, unknown),
but pydantic does not check it: ``"gender": "robot"`` validates. :func:`binding_problems` walks
a resource's JSON along its model (data types, backbone elements and contained resources
included) and reports every code outside its list, naming the element path.

A list ending in ``+`` is the first codes of a longer value set (``Observation.status``:
"registered | preliminary | final | amended +"); the complete R4 lists of the common ones are
in :data:`COMPLETE_CODES`, the others are not checked. The walk follows a plan per model class
built once (which JSON keys hold codes, which hold elements to descend into), so a check costs a
dictionary lookup per key of the resource.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from functools import cache
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel

__all__ = ["COMPLETE_CODES", "R4B_CODES", "binding_problems", "bound_codes"]

COMPLETE_CODES: Mapping[tuple[str, str], frozenset[str]] = MappingProxyType(
    {
        # ObservationStatus (http://hl7.org/fhir/observation-status), also used by
        # DetectedIssue and RiskAssessment.
        **{
            (model, "status"): frozenset(
                [
                    "registered",
                    "preliminary",
                    "final",
                    "amended",
                    "corrected",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                ]
            )
            for model in ("Observation", "DetectedIssue", "RiskAssessment")
        },
        # DiagnosticReportStatus (http://hl7.org/fhir/diagnostic-report-status).
        ("DiagnosticReport", "status"): frozenset(
            [
                "registered",
                "partial",
                "preliminary",
                "final",
                "amended",
                "corrected",
                "appended",
                "cancelled",
                "entered-in-error",
                "unknown",
            ]
        ),
        # EncounterStatus (http://hl7.org/fhir/encounter-status).
        **{
            (model, "status"): frozenset(
                [
                    "planned",
                    "arrived",
                    "triaged",
                    "in-progress",
                    "onleave",
                    "finished",
                    "cancelled",
                    "entered-in-error",
                    "unknown",
                ]
            )
            for model in ("Encounter", "EncounterStatusHistory")
        },
        # TaskStatus (http://hl7.org/fhir/task-status).
        ("Task", "status"): frozenset(
            [
                "draft",
                "requested",
                "received",
                "accepted",
                "rejected",
                "ready",
                "cancelled",
                "in-progress",
                "on-hold",
                "failed",
                "completed",
                "entered-in-error",
            ]
        ),
    }
)
"""``(model class name, JSON key) -> codes`` where the model lists only the first codes of a
required value set (its list ends in ``+``); the codes are those of the R4 value set."""

R4B_CODES: Mapping[tuple[str, str], frozenset[str]] = MappingProxyType(
    {
        # R4B's BundleType adds the Bundle of a topic-based notification (the Subscriptions
        # Backport IG), which the models' list leaves out.
        ("Bundle", "type"): frozenset(["subscription-notification"]),
    }
)
"""``(model class name, JSON key) -> codes`` R4B allows beyond the list the model carries."""

_Spec = tuple[frozenset[str] | None, type[BaseModel] | None, bool]
"""Of one JSON key: its bound codes, or the model of its elements, or (True) that it holds
resources (``contained``)."""


def _element_model(annotation: Any) -> type[BaseModel] | None:
    """The model class of a field's elements (``abc.HumanNameType`` -> ``HumanName``)."""
    stack = [annotation]
    while stack:
        current = stack.pop()
        klass = getattr(current, "get_model_klass", None)
        if callable(klass):
            found = klass()
            return found if isinstance(found, type) and issubclass(found, BaseModel) else None
        stack.extend(typing.get_args(current))
    return None


def bound_codes(model: type[BaseModel], key: str) -> frozenset[str] | None:
    """The codes the required binding of ``model``'s element ``key`` (its JSON name) allows,
    or None when it has no fixed list (or an incomplete one not in :data:`COMPLETE_CODES`)."""
    spec = _plan(model).get(key)
    return spec[0] if spec is not None else None


@cache
def _plan(model: type[BaseModel]) -> dict[str, _Spec]:
    plan: dict[str, _Spec] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key.startswith("_") or key == "fhir_comments":
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        codes = extra.get("enum_values")
        if isinstance(codes, list):
            if "+" not in codes:
                listed = frozenset(str(c) for c in codes)
                plan[key] = (
                    listed | R4B_CODES.get((model.__name__, key), frozenset()),
                    None,
                    False,
                )
            elif (model.__name__, key) in COMPLETE_CODES:
                plan[key] = (COMPLETE_CODES[model.__name__, key], None, False)
            continue
        child = _element_model(field.annotation)
        if child is None:
            continue
        if child.__name__ == "Resource":
            plan[key] = (None, None, True)
        else:
            plan[key] = (None, child, False)
    return plan


def _resource_model(resource: Any) -> type[BaseModel] | None:
    # Imported here: the validation facade imports this module.
    from fhirbots.schemas.validation import fhir_model

    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return None
    return fhir_model(resource["resourceType"])


def _check_code(codes: frozenset[str], value: Any, path: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_code(codes, item, f"{path}[{i}]", out)
    elif isinstance(value, str) and value not in codes:
        allowed = ", ".join(sorted(codes))
        out.append((path, f"{value!r} is not a code of the required binding (allowed: {allowed})"))


def _walk(
    model: type[BaseModel], value: dict[str, Any], path: str, out: list[tuple[str, str]]
) -> None:
    plan = _plan(model)
    for key, item in value.items():
        spec = plan.get(key)
        if spec is None:
            continue
        codes, child, holds_resources = spec
        if codes is not None:
            _check_code(codes, item, f"{path}.{key}", out)
            continue
        items = enumerate(item) if isinstance(item, list) else ((None, item),)
        for index, element in items:
            if not isinstance(element, dict):
                continue
            where = f"{path}.{key}" if index is None else f"{path}.{key}[{index}]"
            inner = _resource_model(element) if holds_resources else child
            if inner is not None:
                _walk(inner, element, where, out)


def binding_problems(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """``(element path, message)`` of every code in ``resource`` outside its required binding.

    Args:
        resource: A resource's JSON with a ``resourceType`` that has an R4B model (others
            have no problems).

    Returns:
        The problems in document order; empty when every bound code is allowed.
    """
    model = _resource_model(resource)
    out: list[tuple[str, str]] = []
    if model is not None:
        _walk(model, resource, str(resource["resourceType"]), out)
    return out
