"""A project's own search definitions: its SearchParameters, ValueSets and CodeSystems.

Search and subscription criteria in a project see the shipped R4 registry plus the
SearchParameter resources stored in that project, and expand terminology modifiers against the
ValueSet and CodeSystem resources stored there. :func:`project_search` builds both from the
stored resources; another project's resources never enter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhirbots.subscriptions.search.registry import Registry, default_registry
from fhirbots.subscriptions.search.stored import project_registry
from fhirbots.subscriptions.search.terminology import TERMINOLOGY_MODIFIERS, Terminology

__all__ = [
    "DEFINITION_TYPES",
    "TERMINOLOGY_TYPES",
    "ProjectSearch",
    "needs_terminology",
    "project_search",
]

TERMINOLOGY_TYPES: tuple[str, ...] = ("ValueSet", "CodeSystem")
"""Resource types the terminology modifiers read."""

DEFINITION_TYPES: tuple[str, ...] = ("SearchParameter", *TERMINOLOGY_TYPES)
"""Resource types that change how a project's searches and criteria are parsed."""


@dataclass(frozen=True)
class ProjectSearch:
    """What parsing a search or criterion in one project needs.

    Attributes:
        registry: The R4 registry plus the project's SearchParameters.
        terminology: The project's ValueSets and CodeSystems.
    """

    registry: Registry = field(default_factory=default_registry)
    terminology: Terminology = field(default_factory=Terminology)


def project_search(resources: Iterable[Mapping[str, Any]]) -> ProjectSearch:
    """The definitions of a project from its stored resources (other types are ignored).

    Args:
        resources: The project's current SearchParameter, ValueSet and CodeSystem resources.
    """
    listed = [r for r in resources if r.get("resourceType") in DEFINITION_TYPES]
    terminology = Terminology(r for r in listed if r.get("resourceType") in TERMINOLOGY_TYPES)
    return ProjectSearch(project_registry(listed), terminology)


def needs_terminology(names: Iterable[str]) -> bool:
    """Whether any parameter name (``code:in``, ``subject:Patient.code:below``) carries a
    terminology modifier, so the project's ValueSets and CodeSystems must be read first."""
    for name in names:
        for segment in name.split("."):
            if segment.partition(":")[2] in TERMINOLOGY_MODIFIERS:
                return True
    return False
