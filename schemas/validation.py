"""The FHIR validation facade: R4B models of fhir.resources, and the engine's custom types.

:func:`validate_resource` is the one place a resource is checked before it is stored. Problems
come back as :class:`ValidationProblem` values naming the element path (``Patient.name[0]``),
so the API can answer 422 with an OperationOutcome that says what is wrong and where.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources.R4B.resource import Resource
from pydantic import BaseModel, ValidationError

__all__ = [
    "CUSTOM_TYPES",
    "ResourceInvalid",
    "ValidationProblem",
    "fhir_model",
    "is_known_type",
    "register_custom_type",
    "validate_resource",
]


@dataclass(frozen=True)
class ValidationProblem:
    """One problem: where (FHIRPath-like element path) and what."""

    path: str
    message: str


class ResourceInvalid(ValueError):
    """A resource did not validate; ``problems`` says where and why."""

    def __init__(self, problems: list[ValidationProblem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems


Validator = Callable[[dict[str, Any]], None]

CUSTOM_TYPES: dict[str, type[BaseModel]] = {}
"""Engine-defined resource types (like ``Bot``) and their pydantic models."""


def register_custom_type(name: str, model: type[BaseModel]) -> None:
    """Let the datastore accept ``name`` as a resource type, validated by ``model``."""
    CUSTOM_TYPES[name] = model


@cache
def fhir_model(resource_type: str) -> type[BaseModel] | None:
    """The R4B model class of a resource type, or None."""
    module_name = f"fhir.resources.R4B.{resource_type.lower()}"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    model = getattr(module, resource_type, None)
    if not isinstance(model, type) or not issubclass(model, Resource):
        return None
    return model


def _model_for(resource_type: str) -> type[BaseModel] | None:
    return CUSTOM_TYPES.get(resource_type) or fhir_model(resource_type)


def is_known_type(resource_type: str) -> bool:
    """True for an R4 resource type (with a model) or a registered custom type."""
    return resource_type.isalnum() and _model_for(resource_type) is not None


def _path(resource_type: str, loc: tuple[int | str, ...]) -> str:
    text = resource_type
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith("function-") and "[" not in part:
            text += f".{part}"
    return text


def validate_resource(resource: Any, *, expected_type: str | None = None) -> None:
    """Check ``resource`` against its R4B (or custom) model.

    Raises:
        ResourceInvalid: with one :class:`ValidationProblem` per error found.
    """
    if not isinstance(resource, dict):
        raise ResourceInvalid([ValidationProblem("(root)", "a resource must be a JSON object")])
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise ResourceInvalid([ValidationProblem("resourceType", "resourceType is missing")])
    if expected_type is not None and resource_type != expected_type:
        raise ResourceInvalid(
            [
                ValidationProblem(
                    "resourceType", f"expected {expected_type}, the body says {resource_type}"
                )
            ]
        )
    model = _model_for(resource_type)
    if model is None:
        raise ResourceInvalid(
            [ValidationProblem("resourceType", f"unknown resource type {resource_type!r}")]
        )
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        problems = [
            ValidationProblem(_path(resource_type, tuple(error["loc"])), error["msg"])
            for error in exc.errors(include_url=False)
        ]
        raise ResourceInvalid(problems) from exc
