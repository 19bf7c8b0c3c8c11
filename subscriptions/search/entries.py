"""What a resource contributes to each search parameter: typed entries per parameter code.

Used at write time by the SQL index (one entry, one row) and at match time by
:func:`~fhirbots.subscriptions.search.matcher.matches`, so both see the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhirbots.subscriptions.search.extraction import compile_expression, compile_relative
from fhirbots.subscriptions.search.registry import Registry, SearchParamDef, default_registry
from fhirbots.subscriptions.search.values import (
    DateEntry,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
    date_entries,
    number_entries,
    quantity_entries,
    reference_entries,
    string_entries,
    token_entries,
    uri_entries,
)

__all__ = ["ENTRY_BUILDERS", "Entry", "composite_groups", "entries_for", "resource_entries"]

Entry = (
    StringEntry | TokenEntry | ReferenceEntry | DateEntry | NumberEntry | QuantityEntry | UriEntry
)

ENTRY_BUILDERS: dict[str, Callable[[Any], list[Any]]] = {
    "string": string_entries,
    "token": token_entries,
    "reference": reference_entries,
    "date": date_entries,
    "number": number_entries,
    "quantity": quantity_entries,
    "uri": uri_entries,
}
"""Entry builder per parameter type: selected FHIR value -> typed entries."""


def entries_for(param: SearchParamDef, resource: dict[str, Any]) -> list[Any]:
    """The entries ``resource`` has for ``param`` (empty when the parameter is unsupported).

    Args:
        param: A parameter definition resolved for the resource's type.
        resource: The resource as a JSON dict.

    Returns:
        Typed entries (see :mod:`fhirbots.subscriptions.search.values`).
    """
    builder = ENTRY_BUILDERS.get(param.type)
    if builder is None or not param.supported or param.expression is None:
        return []
    selected = compile_expression(param.expression, param.resource_type)(resource)
    return builder(selected) if selected else []


def resource_entries(
    resource: dict[str, Any], registry: Registry | None = None
) -> dict[str, list[Any]]:
    """Entries of every supported parameter of the resource's type, by parameter code.

    Args:
        resource: The resource as a JSON dict (``resourceType`` required).
        registry: Parameter definitions; defaults to the shipped R4 registry.

    Returns:
        Parameter code to its non-empty list of entries.
    """
    reg = registry or default_registry()
    resource_type = resource["resourceType"]
    found: dict[str, list[Any]] = {}
    for param in reg.supported_params(resource_type):
        entries = entries_for(param, resource)
        if entries:
            found[param.code] = entries
    return found


def composite_groups(param: SearchParamDef, resource: dict[str, Any]) -> list[list[list[Any]]]:
    """Entries of a composite parameter: per selected element, per component, its entries.

    Components only match together when they come from the same element (the same
    Observation.component, say), so the element is kept as a group.

    Args:
        param: A supported composite parameter resolved for the resource's type.
        resource: The resource as a JSON dict.

    Returns:
        ``groups[element][component]`` -> entries.
    """
    if param.type != "composite" or not param.supported or param.expression is None:
        return []
    elements = compile_expression(param.expression, param.resource_type)(resource)
    components = [
        (ENTRY_BUILDERS[ctype], compile_relative(expr))
        for ctype, (_, expr) in zip(param.component_types, param.components, strict=True)
    ]
    groups: list[list[list[Any]]] = []
    for element in elements:
        if not isinstance(element, dict):
            continue
        groups.append([build(extract(element)) for build, extract in components])
    return groups
