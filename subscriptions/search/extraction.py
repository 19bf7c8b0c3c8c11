"""Compile a search parameter's FHIRPath expression into a fast value extractor.

Most R4 expressions are plain paths (``Observation.code``), unions of them
(``Patient.name | Person.name`` narrowed to one type), choice-type casts
(``(Observation.value as Quantity)``, ``Condition.onset.as(Period)``) and two filters:
``.where(resolve() is Patient)`` and ``.where(system='email')``. Those compile into a chain of
dict lookups (a few microseconds per resource). Anything else falls back to fhirpathpy with the
R4 model, compiled once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import Any

import fhirpathpy
import structlog
from fhirpathpy.models import models

from fhirbots.subscriptions.search.registry import split_union
from fhirbots.subscriptions.search.values import reference_type

__all__ = ["ELEMENT_ROOT", "Extractor", "compile_expression", "compile_relative", "is_fast_path"]

Extractor = Callable[[dict[str, Any]], list[Any]]
"""Takes a resource (JSON dict), returns the values the expression selects."""

_log = structlog.get_logger(__name__)

_R4_MODEL: dict[str, Any] = models["r4"]
_CHOICE_PATHS: dict[str, list[str]] = _R4_MODEL["choiceTypePaths"]

_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_STEP_RE = re.compile(
    rf"\.(?:(?P<field>{_NAME})(?![A-Za-z0-9_(])"
    rf"|as\((?P<as>{_NAME})\)"
    rf"|where\(resolve\(\) is (?P<resolve>{_NAME})\)"
    rf"|where\((?P<wfield>{_NAME})\s*=\s*'(?P<wvalue>[^'\\]*)'\))"
)
_PAREN_CAST_RE = re.compile(rf"\((?P<inner>[^()]+) as (?P<type>{_NAME})\)")
_TAIL_CAST_RE = re.compile(rf"^(?P<inner>[^()]+) as (?P<type>{_NAME})$")
_PATH_TYPES: dict[str, str] = _R4_MODEL["path2Type"]

Step = tuple[str, str, str]  # (kind, name, argument)


def _parse_steps(path: str) -> list[Step] | None:
    """Parse ``.a.b.as(T).where(...)`` into steps, or None if anything else is present."""
    steps: list[Step] = []
    pos = 0
    while pos < len(path):
        match = _STEP_RE.match(path, pos)
        if match is None:
            return None
        if match.group("field"):
            steps.append(("field", match.group("field"), ""))
        elif match.group("as"):
            steps.append(("as", match.group("as"), ""))
        elif match.group("resolve"):
            steps.append(("resolve", match.group("resolve"), ""))
        else:
            steps.append(("where", match.group("wfield"), match.group("wvalue")))
        pos = match.end()
    return steps


def _fold_choices(root: str, steps: list[Step]) -> list[Step] | None:
    """Turn ``field`` + ``as(T)`` on a choice element into one lookup of ``fieldT``."""
    folded: list[Step] = []
    path = root
    for kind, name, arg in steps:
        if kind == "as":
            # A path the model types as one non-choice element cannot be folded; a path it does
            # not know is inside a datatype (UsageContext.value), where `as` marks a choice.
            is_choice = path in _CHOICE_PATHS or path not in _PATH_TYPES
            if not folded or folded[-1][0] not in {"field", "choice"} or not is_choice:
                return None
            prev = folded.pop()
            folded.append(("field", prev[1] + name[0].upper() + name[1:], ""))
            continue
        if kind == "field":
            path = f"{path}.{name}"
            if path in _CHOICE_PATHS:
                # A bare choice element (Observation.effective) selects whichever of
                # effectiveDateTime, effectivePeriod, ... is present.
                folded.append(("choice", name, ",".join(_CHOICE_PATHS[path])))
                continue
            if _PATH_TYPES.get(path) == "Extension":
                # Inside an extension (custom SearchParameters: ...extension.value.code) the
                # paths are the Extension type's, where `value` is a choice.
                path = "Extension"
        folded.append((kind, name, arg))
    return folded


def _compile_part(part: str, resource_type: str) -> Callable[[Any], list[Any]] | None:
    """Compile one union member into a lookup chain, or None if it needs FHIRPath."""
    text = part.strip()
    text = _PAREN_CAST_RE.sub(r"\g<inner>.as(\g<type>)", text)
    text = _TAIL_CAST_RE.sub(r"\g<inner>.as(\g<type>)", text)
    if not text.startswith(resource_type + ".") and text != resource_type:
        return None
    steps = _parse_steps(text[len(resource_type) :])
    if steps is None:
        return None
    folded = _fold_choices(resource_type, steps)
    if folded is None:
        return None
    return _chain(folded)


def _flatten(value: Any, out: list[Any]) -> None:
    if value is None:
        return
    if isinstance(value, list):
        out.extend(value)
    else:
        out.append(value)


def _field_step(keys: list[str]) -> Callable[[list[Any]], list[Any]]:
    def step(nodes: list[Any]) -> list[Any]:
        out: list[Any] = []
        for node in nodes:
            if isinstance(node, dict):
                for key in keys:
                    _flatten(node.get(key), out)
        return out

    return step


def _resolve_step(target: str) -> Callable[[list[Any]], list[Any]]:
    def step(nodes: list[Any]) -> list[Any]:
        out: list[Any] = []
        for node in nodes:
            if isinstance(node, dict):
                ref = node.get("reference")
                declared = node.get("type")
                rtype = reference_type(ref, declared) if isinstance(ref, str) else declared
                if rtype == target:
                    out.append(node)
        return out

    return step


def _where_step(name: str, literal: str) -> Callable[[list[Any]], list[Any]]:
    def step(nodes: list[Any]) -> list[Any]:
        return [n for n in nodes if isinstance(n, dict) and n.get(name) == literal]

    return step


def _chain(steps: list[Step]) -> Callable[[Any], list[Any]]:
    funcs: list[Callable[[list[Any]], list[Any]]] = []
    for kind, name, arg in steps:
        if kind == "field":
            funcs.append(_field_step([name]))
        elif kind == "choice":
            funcs.append(_field_step([name + t[0].upper() + t[1:] for t in arg.split(",")]))
        elif kind == "resolve":
            funcs.append(_resolve_step(name))
        else:
            funcs.append(_where_step(name, arg))

    def run(resource: Any) -> list[Any]:
        nodes: list[Any] = [resource]
        for func in funcs:
            nodes = func(nodes)
            if not nodes:
                break
        return nodes

    return run


def is_fast_path(expression: str, resource_type: str) -> bool:
    """Whether every union member of ``expression`` compiles to a lookup chain."""
    return all(_compile_part(part, resource_type) is not None for part in split_union(expression))


@lru_cache(maxsize=4096)
def compile_expression(expression: str, resource_type: str) -> Extractor:
    """Compile ``expression`` (already narrowed to ``resource_type``) into an extractor.

    Args:
        expression: FHIRPath expression of a search parameter.
        resource_type: The resource type the extractor will be applied to.

    Returns:
        A function from resource to the list of selected values.
    """
    flag = _NOT_FALSE_RE.match(expression)
    if flag is not None and flag.group(1) == flag.group(3) and flag.group(2) == flag.group(4):
        present = _compile_part(f"{flag.group(1)}.{flag.group(2)}", resource_type)
        if present is not None:
            return _not_false(present)
    parts = split_union(expression)
    compiled = [_compile_part(part, resource_type) for part in parts]
    if all(c is not None for c in compiled):
        chains = [c for c in compiled if c is not None]
        if len(chains) == 1:
            return chains[0]

        def union(resource: dict[str, Any]) -> list[Any]:
            out: list[Any] = []
            for chain in chains:
                out.extend(chain(resource))
            return out

        return union
    slow = fhirpathpy.compile(expression, _R4_MODEL)

    def fallback(resource: dict[str, Any]) -> list[Any]:
        try:
            return [_plain(v) for v in slow(resource, {})]
        except Exception as exc:  # an odd resource must not fail the write indexing it
            _log.warning("fhirpath_failed", expression=expression, error=str(exc))
            return []

    return fallback


_NOT_FALSE_RE = re.compile(r"^(\w+)\.(\w+)\.exists\(\) and (\w+)\.(\w+) != false$")
"""``X.y.exists() and X.y != false``: a boolean flag such as Patient.deceased, where any
value but ``false`` (a deceasedDateTime, ``true``) means true."""


def _not_false(present: Extractor) -> Extractor:
    def flag(resource: dict[str, Any]) -> list[Any]:
        values = present(resource)
        return [bool(values) and all(v is not False for v in values)]

    return flag


ELEMENT_ROOT = "_Element"
"""Stand-in root for expressions relative to an element (composite components)."""


@lru_cache(maxsize=1024)
def compile_relative(expression: str) -> Extractor:
    """Compile an expression evaluated on an element rather than a resource.

    Composite components are written relative to the composite's element (``code``,
    ``value.as(Quantity)``); they take the same fast path as resource expressions.

    Args:
        expression: The component's FHIRPath expression.

    Returns:
        A function from element (a JSON dict) to the values selected.
    """
    parts = split_union(expression)
    if all(not part.startswith(("%", "(")) for part in parts):
        rooted = " | ".join(f"{ELEMENT_ROOT}.{part}" for part in parts)
        if is_fast_path(rooted, ELEMENT_ROOT):
            return compile_expression(rooted, ELEMENT_ROOT)
    return compile_expression(expression, "")


def _plain(value: Any) -> Any:
    """Turn fhirpathpy results back into JSON values (it turns decimals into Decimal and
    wraps dates and resource nodes)."""
    if isinstance(value, str | bool | int | float) or value is None:
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    data = getattr(value, "data", None)
    if data is not None:
        return _plain(data)
    return str(value)
