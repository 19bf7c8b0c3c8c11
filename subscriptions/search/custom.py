"""Search parameters of the engine's custom resources (not part of FHIR R4).

``Bot`` (see :mod:`fhirbots.schemas.bot`) is stored and searched like any resource. Its parameters
are declared here in the registry's compact entry format, with the same modifiers the R4 spec
allows for each type, and are added to
:func:`~fhirbots.subscriptions.search.registry.default_registry`.
"""

from __future__ import annotations

from typing import Any

from fhirbots.subscriptions.search.generate_registry import SPEC_MODIFIERS

__all__ = ["CUSTOM_PARAMETERS", "custom_entry"]

_CUSTOM_URL = "https://fhirbots.dev/fhir/SearchParameter/"
"""Canonical base of the engine's own SearchParameter definitions."""


def custom_entry(
    resource_type: str, code: str, param_type: str, expression: str, target: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A compact registry entry for a parameter of a custom resource type.

    Args:
        resource_type: The custom resource type (base).
        code: The parameter name.
        param_type: The FHIR search parameter type.
        expression: FHIRPath expression rooted at ``resource_type``.
        target: Target types of a reference parameter.

    Returns:
        An entry in the format the registry loads.
    """
    return {
        "url": f"{_CUSTOM_URL}{resource_type}-{code}",
        "code": code,
        "type": param_type,
        "base": [resource_type],
        "expression": expression,
        "target": list(target),
        "modifier": list(SPEC_MODIFIERS[param_type]),
        "comparator": [],
        "component": [],
    }


CUSTOM_PARAMETERS: tuple[dict[str, Any], ...] = (
    custom_entry("Bot", "name", "string", "Bot.name"),
    custom_entry("Bot", "identifier", "token", "Bot.identifier"),
    custom_entry("Bot", "status", "token", "Bot.status"),
    custom_entry("Bot", "description", "string", "Bot.description"),
)
"""Parameters of ``Bot``: find bots by name, identifier, status and description."""
