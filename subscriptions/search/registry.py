"""The SearchParameter registry, loaded from the generated R4 definitions.

The data file ``data/search_parameters.json`` is generated from the official R4 SearchParameter
Bundle by :mod:`fhirbots.subscriptions.search.generate_registry`; nothing here is hand-written per
parameter. A parameter defined on ``Resource`` or ``DomainResource`` applies to every resource
type. Expressions that cover several resource types (``Patient.name | Person.name``) are narrowed
to the union members rooted at the requested type.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal, cast

__all__ = [
    "ABSTRACT_BASES",
    "COMPONENT_TYPES",
    "UNSUPPORTED_PARAMETERS",
    "UNSUPPORTED_TYPES",
    "ParamType",
    "Registry",
    "SearchParamDef",
    "default_registry",
    "narrow_expression",
    "split_union",
]

ParamType = Literal[
    "string", "token", "reference", "date", "number", "quantity", "uri", "composite", "special"
]

DATA_PATH = Path(__file__).resolve().parent / "data" / "search_parameters.json"

ABSTRACT_BASES = ("Resource", "DomainResource")
"""Bases whose parameters apply to every (domain) resource type."""

UNSUPPORTED_TYPES: frozenset[str] = frozenset({"special"})
"""Parameter types parsed and reported as unsupported (``near``: no geo search)."""

COMPONENT_TYPES: frozenset[str] = frozenset(
    {"string", "token", "reference", "date", "number", "quantity", "uri"}
)
"""Types a composite's components may have for the composite to be supported."""

UNSUPPORTED_PARAMETERS: frozenset[str] = frozenset({"_text", "_content", "_query", "_list"})
"""Standard parameters without a usable definition here: no full-text index, no named queries,
no List-based search."""


@dataclass(frozen=True, slots=True)
class SearchParamDef:
    """One search parameter definition for one resource type.

    Attributes:
        code: The name used in the URL (``code``, ``_lastUpdated``).
        type: The FHIR search parameter type.
        resource_type: The resource type this definition was resolved for.
        expression: FHIRPath expression narrowed to ``resource_type`` (None if undefined).
        targets: Resource types a reference parameter may point to.
        modifiers: Modifiers the R4 spec allows for this parameter.
        comparators: Prefixes the definition lists (informational).
        components: ``(definition url, expression)`` pairs of a composite parameter.
        component_types: The type of each component's definition (``""`` if unknown).
        url: Canonical URL of the SearchParameter.
    """

    code: str
    type: ParamType
    resource_type: str
    expression: str | None
    targets: tuple[str, ...] = ()
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = ()
    component_types: tuple[str, ...] = ()
    url: str = ""

    @property
    def supported(self) -> bool:
        """Whether searching on this parameter is implemented."""
        if self.type == "composite" and not (
            self.components
            and all(t in COMPONENT_TYPES for t in self.component_types)
            # `%resource` inside a component needs the root resource: not supported.
            and not any(expr.startswith("%") for _, expr in self.components)
        ):
            return False
        return (
            self.type not in UNSUPPORTED_TYPES
            and self.code not in UNSUPPORTED_PARAMETERS
            and self.expression is not None
        )


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on top-level ``|`` (outside parentheses and quotes)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(expression):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _root_of(part: str) -> str:
    """The leading identifier of a union member, ignoring opening parentheses."""
    text = part.lstrip("(")
    end = 0
    while end < len(text) and (text[end].isalnum() or text[end] == "_"):
        end += 1
    return text[:end]


def narrow_expression(expression: str | None, resource_type: str) -> str | None:
    """Keep the union members of ``expression`` that apply to ``resource_type``.

    Args:
        expression: The definition's FHIRPath expression.
        resource_type: The type being searched.

    Returns:
        The narrowed expression, or the original when no member names a resource type.
    """
    if not expression:
        return None
    parts = split_union(expression)
    kept: list[str] = []
    for part in parts:
        root = _root_of(part)
        if root == resource_type:
            kept.append(part)
        elif root in ABSTRACT_BASES:
            text = part.lstrip("(")
            prefix = part[: len(part) - len(text)]
            kept.append(prefix + resource_type + text[len(root) :])
        elif not root[:1].isupper():
            kept.append(part)
    return " | ".join(kept) if kept else None


class Registry:
    """Lookup of search parameters by resource type and code.

    Args:
        entries: Compact parameter entries as written by the generator.
    """

    def __init__(self, entries: list[Mapping[str, object]]) -> None:
        self._by_base: dict[str, dict[str, Mapping[str, object]]] = {}
        self._type_by_url: dict[str, str] = {
            cast(str, e["url"]): cast(str, e["type"]) for e in entries if e.get("url")
        }
        for entry in entries:
            for base in cast(list[str], entry["base"]):
                self._by_base.setdefault(base, {})[cast(str, entry["code"])] = entry
        self.resource_types: frozenset[str] = frozenset(
            b for b in self._by_base if b not in ABSTRACT_BASES
        )
        self._cache: dict[tuple[str, str], SearchParamDef | None] = {}
        self._supported: dict[str, tuple[SearchParamDef, ...]] = {}

    @classmethod
    def from_file(
        cls, path: Path = DATA_PATH, extra: Iterable[Mapping[str, object]] = ()
    ) -> Registry:
        """Load a registry from a generated data file, plus ``extra`` compact entries."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls([*data["parameters"], *extra])

    def get(self, resource_type: str, code: str) -> SearchParamDef | None:
        """Return the definition of ``code`` for ``resource_type``, or None if unknown."""
        key = (resource_type, code)
        if key not in self._cache:
            self._cache[key] = self._resolve(resource_type, code)
        return self._cache[key]

    def _resolve(self, resource_type: str, code: str) -> SearchParamDef | None:
        entry = self._by_base.get(resource_type, {}).get(code)
        if entry is None:
            for base in ABSTRACT_BASES:
                entry = self._by_base.get(base, {}).get(code)
                if entry is not None:
                    break
        if entry is None:
            return None
        components = cast(list[dict[str, str]], entry.get("component", []))
        return SearchParamDef(
            code=code,
            type=cast(ParamType, entry["type"]),
            resource_type=resource_type,
            expression=narrow_expression(cast(str | None, entry.get("expression")), resource_type),
            targets=tuple(cast(list[str], entry.get("target", []))),
            modifiers=tuple(cast(list[str], entry.get("modifier", []))),
            comparators=tuple(cast(list[str], entry.get("comparator", []))),
            components=tuple((c["definition"], c["expression"]) for c in components),
            component_types=tuple(self._type_by_url.get(c["definition"], "") for c in components),
            url=cast(str, entry.get("url", "")),
        )

    def codes(self, resource_type: str) -> Iterator[str]:
        """Yield every parameter code defined for ``resource_type`` (own and inherited)."""
        seen: set[str] = set()
        for base in (resource_type, *ABSTRACT_BASES):
            for code in self._by_base.get(base, {}):
                if code not in seen:
                    seen.add(code)
                    yield code

    def supported_params(self, resource_type: str) -> tuple[SearchParamDef, ...]:
        """Every supported parameter of ``resource_type`` (computed once per type)."""
        found = self._supported.get(resource_type)
        if found is None:
            found = tuple(
                p
                for code in self.codes(resource_type)
                if (p := self.get(resource_type, code)) is not None and p.supported
            )
            self._supported[resource_type] = found
        return found

    def unsupported(self) -> list[SearchParamDef]:
        """Every definition (for every resource type) that searching does not support."""
        found: list[SearchParamDef] = []
        for base in sorted(self._by_base):
            for code in sorted(self._by_base[base]):
                definition = self.get(base, code)
                if definition is not None and not definition.supported:
                    found.append(definition)
        return found


@cache
def default_registry() -> Registry:
    """The shipped R4 definitions plus the custom resources' parameters (loaded once)."""
    from fhirbots.subscriptions.search.custom import CUSTOM_PARAMETERS

    return Registry.from_file(extra=CUSTOM_PARAMETERS)
