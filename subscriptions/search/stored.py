"""SearchParameter resources stored in a project: checked, and added to that project's registry.

A stored ``SearchParameter`` with ``status`` ``active`` adds a parameter to each of its ``base``
types, for searches and subscription criteria in its project only. Its ``expression`` is
evaluated like the R4 ones (:mod:`fhirbots.subscriptions.search.extraction`: a lookup chain when
it is a plain path, fhirpathpy otherwise). :func:`check_search_parameter` refuses what cannot
work: a type other than string, token, reference, date, number, quantity or uri, an unknown base,
an expression that does not parse or fails, a code that a built-in parameter of a base already
has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from fhirbots.subscriptions.errors import CriteriaError
from fhirbots.subscriptions.fhirpath import check_syntax
from fhirbots.subscriptions.search.errors import InvalidDefinitionError
from fhirbots.subscriptions.search.generate_registry import compact_entry
from fhirbots.subscriptions.search.registry import (
    Registry,
    SearchParamDef,
    default_registry,
    narrow_expression,
)

__all__ = [
    "CUSTOM_TYPES",
    "ProjectRegistry",
    "check_search_parameter",
    "project_registry",
]

CUSTOM_TYPES: tuple[str, ...] = (
    "string",
    "token",
    "reference",
    "date",
    "number",
    "quantity",
    "uri",
)
"""Types a stored SearchParameter may have (composite and special are refused)."""

_CODE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9\-_]*$")
_CACHED_REGISTRIES = 256
"""Project registries kept (keyed by their parameters' content)."""


def _refuse(message: str) -> InvalidDefinitionError:
    return InvalidDefinitionError(message, param="SearchParameter")


def check_search_parameter(
    resource: Mapping[str, Any], base: Registry | None = None
) -> dict[str, Any]:
    """Check a SearchParameter resource; return its compact registry entry.

    Args:
        resource: The SearchParameter resource.
        base: The built-in registry its code must not clash with (default: R4 + Bot).

    Raises:
        InvalidDefinitionError: Naming the element that cannot be used.
    """
    registry = base or default_registry()
    ptype = resource.get("type")
    if ptype not in CUSTOM_TYPES:
        raise _refuse(
            f"SearchParameter.type {ptype!r} is not supported "
            f"(supported: {', '.join(CUSTOM_TYPES)})"
        )
    code = resource.get("code")
    if not isinstance(code, str) or not _CODE_RE.match(code):
        raise _refuse(f"SearchParameter.code {code!r} is not a valid parameter name")
    bases = resource.get("base") or []
    if not bases:
        raise _refuse("SearchParameter.base names no resource type")
    expression = resource.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise _refuse("SearchParameter.expression is required")
    try:
        check_syntax(expression)
        compiled = fhirpathpy.compile(expression, models["r4"])
    except (CriteriaError, Exception) as exc:
        raise _refuse(f"SearchParameter.expression {expression!r}: {exc}") from exc
    for resource_type in bases:
        if resource_type not in registry.resource_types:
            raise _refuse(f"SearchParameter.base: unknown resource type {resource_type!r}")
        if registry.get(resource_type, code) is not None:
            raise _refuse(
                f"SearchParameter.code {code!r} clashes with the built-in {resource_type} "
                f"search parameter {code!r}"
            )
        if narrow_expression(expression, resource_type) is None:
            raise _refuse(f"SearchParameter.expression has no part for {resource_type}")
        try:  # fhirpathpy reports unknown functions only when it evaluates them
            compiled({"resourceType": resource_type}, {})
        except Exception as exc:
            raise _refuse(f"SearchParameter.expression {expression!r}: {exc}") from exc
    if not resource.get("url"):
        resource = {**resource, "url": f"urn:fhirbots:SearchParameter:{code}"}
    return compact_entry(dict(resource))


class ProjectRegistry(Registry):
    """The built-in registry plus one project's parameters (which never replace built-ins).

    Args:
        base: The built-in registry.
        entries: Compact entries of the project's parameters.
    """

    def __init__(self, base: Registry, entries: Sequence[Mapping[str, object]]) -> None:
        super().__init__(list(entries))
        self._base = base
        self._type_by_url = {**base._type_by_url, **self._type_by_url}
        self.resource_types = base.resource_types

    def _resolve(self, resource_type: str, code: str) -> SearchParamDef | None:
        if code in self._by_base.get(resource_type, {}):
            return super()._resolve(resource_type, code)
        return self._base.get(resource_type, code)

    def codes(self, resource_type: str) -> Iterator[str]:
        """The built-in codes of ``resource_type``, then the project's."""
        yield from self._base.codes(resource_type)
        yield from self._by_base.get(resource_type, {})

    def unsupported(self) -> list[SearchParamDef]:
        """The built-in parameters searching does not support."""
        return self._base.unsupported()


@lru_cache(maxsize=_CACHED_REGISTRIES)
def _registry_of(entries: tuple[str, ...]) -> Registry:
    if not entries:
        return default_registry()
    return ProjectRegistry(default_registry(), [json.loads(e) for e in entries])


def project_registry(resources: Iterable[Mapping[str, Any]]) -> Registry:
    """The registry of a project with these stored SearchParameter resources.

    Only ``active`` ones count; one that no longer passes :func:`check_search_parameter` (written
    before a check existed) is left out, and of two with the same code and base the one with the
    lower id wins. The result is cached by content, so searches reuse compiled parameters.
    """
    entries: dict[tuple[str, str], str] = {}
    ordered = sorted(
        (r for r in resources if r.get("resourceType") == "SearchParameter"),
        key=lambda r: str(r.get("id") or ""),
    )
    for resource in ordered:
        if resource.get("status") != "active":
            continue
        try:
            entry = check_search_parameter(resource)
        except InvalidDefinitionError:
            continue
        for resource_type in entry["base"]:
            key = (resource_type, entry["code"])
            if key not in entries:
                entries[key] = json.dumps({**entry, "base": [resource_type]}, sort_keys=True)
    return _registry_of(tuple(sorted(entries.values())))
