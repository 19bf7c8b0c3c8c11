"""Terminology for the token modifiers ``:in``, ``:not-in``, ``:below`` and ``:above``.

There is no terminology server: the ValueSet and CodeSystem resources stored in the project are
the terminology. A modifier is expanded when the query is parsed into the codes it stands for, a
list of ``(system, code)`` pairs (``code`` None: every code of the system), so the SQL search
(``IN`` lists) and the in-memory matcher test the same plain token values.

* ``:in`` / ``:not-in`` name a ValueSet by its canonical ``url`` (``|version`` optional). Its
  ``expansion.contains`` is used when present; otherwise ``compose``: ``include.concept`` (explicit
  codes), ``include.system`` alone (the whole code system), ``include.valueSet`` (imports, which
  intersect with the rest of the include), ``include.filter`` with ``is-a``/``descendent-of`` on a
  stored CodeSystem's hierarchy, and ``exclude`` of explicit codes.
* ``:below`` / ``:above`` take ``system|code`` and follow the stored CodeSystem's ``concept``
  hierarchy (nested concepts, and the ``parent``/``child`` properties): the code and its
  descendants, or the code and its ancestors (R4 ``subsumes``).

A ValueSet or CodeSystem that is needed but not stored raises
:class:`~fhirbots.subscriptions.search.errors.MissingTerminologyError` naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fhirbots.subscriptions.search.errors import InvalidValueError, MissingTerminologyError

__all__ = ["MAX_CODES", "TERMINOLOGY_MODIFIERS", "Concept", "Terminology"]

TERMINOLOGY_MODIFIERS: frozenset[str] = frozenset({"in", "not-in", "below", "above"})
"""Token modifiers that need terminology."""

MAX_CODES = 10_000
"""Largest expansion a search or criterion may use: beyond it the ``IN`` lists grow too long
to be a sensible query (a 422 names the ValueSet)."""

Concept = tuple[str, str | None]
"""``(system, code)``; ``code`` None stands for every code of ``system``."""


def _canonical(url: str) -> tuple[str, str | None]:
    base, _, version = url.partition("|")
    return base.strip(), version.strip() or None


class _CodeSystem:
    """The hierarchy of one CodeSystem: parents and children of each code."""

    def __init__(self, resource: Mapping[str, Any]) -> None:
        self.url = str(resource.get("url") or "")
        self.codes: list[str] = []
        self.children: dict[str, set[str]] = {}
        self.parents: dict[str, set[str]] = {}
        self._walk(resource.get("concept") or [], None)

    def _link(self, parent: str, child: str) -> None:
        self.children.setdefault(parent, set()).add(child)
        self.parents.setdefault(child, set()).add(parent)

    def _walk(self, concepts: list[Any], parent: str | None) -> None:
        for concept in concepts:
            if not isinstance(concept, dict) or not isinstance(concept.get("code"), str):
                continue
            code = concept["code"]
            self.codes.append(code)
            if parent is not None:
                self._link(parent, code)
            for prop in concept.get("property") or []:
                other = prop.get("valueCode") if isinstance(prop, dict) else None
                if isinstance(other, str):
                    if prop.get("code") == "parent":
                        self._link(other, code)
                    elif prop.get("code") == "child":
                        self._link(code, other)
            self._walk(concept.get("concept") or [], code)

    def closure(self, code: str, links: dict[str, set[str]]) -> list[str]:
        """``code`` and every code reachable from it through ``links`` (cycles are safe)."""
        seen = [code]
        found = {code}
        index = 0
        while index < len(seen):
            for nxt in sorted(links.get(seen[index], ())):
                if nxt not in found:
                    found.add(nxt)
                    seen.append(nxt)
            index += 1
        return seen


class Terminology:
    """The ValueSets and CodeSystems of one project, by canonical URL.

    Args:
        resources: ValueSet and CodeSystem resources (other types are ignored).
    """

    def __init__(self, resources: Iterable[Mapping[str, Any]] = ()) -> None:
        self._value_sets: dict[str, list[Mapping[str, Any]]] = {}
        self._code_systems: dict[str, _CodeSystem] = {}
        for resource in resources:
            url = resource.get("url")
            if not isinstance(url, str):
                continue
            if resource.get("resourceType") == "ValueSet":
                self._value_sets.setdefault(url, []).append(resource)
            elif resource.get("resourceType") == "CodeSystem":
                self._code_systems[url] = _CodeSystem(resource)

    # -- ValueSets ----------------------------------------------------------------------------

    def _value_set(self, url: str, name: str) -> Mapping[str, Any]:
        base, version = _canonical(url)
        candidates = [
            v
            for v in self._value_sets.get(base, [])
            if version is None or v.get("version") == version
        ]
        if not candidates:
            raise MissingTerminologyError(
                f"{name}: ValueSet {url!r} is not stored in this project", param=name
            )
        return max(candidates, key=lambda v: str(v.get("version") or ""))

    def expand(self, url: str, name: str) -> list[Concept]:
        """The concepts of the ValueSet ``url`` (sorted, each once).

        Raises:
            MissingTerminologyError: The ValueSet, or a CodeSystem it filters on, is not stored;
                or the expansion has more than :data:`MAX_CODES` codes.
        """
        found = sorted(self._expand(url, name, ()), key=lambda c: (c[0], c[1] or ""))
        if len(found) > MAX_CODES:
            raise MissingTerminologyError(
                f"{name}: ValueSet {url!r} expands to {len(found)} codes (at most {MAX_CODES})",
                param=name,
            )
        return found

    def _expand(self, url: str, name: str, path: tuple[str, ...]) -> set[Concept]:
        if url in path:
            raise InvalidValueError(f"{name}: ValueSet {url!r} imports itself", param=name)
        value_set = self._value_set(url, name)
        expansion = value_set.get("expansion")
        if isinstance(expansion, dict) and expansion.get("contains"):
            return set(_contains(expansion["contains"]))
        compose = value_set.get("compose") or {}
        included: set[Concept] = set()
        for part in compose.get("include") or []:
            included |= self._include(part, name, (*path, url))
        for part in compose.get("exclude") or []:
            included -= self._include(part, name, (*path, url))
        return included

    def _include(self, part: Mapping[str, Any], name: str, path: tuple[str, ...]) -> set[Concept]:
        system = part.get("system")
        found: set[Concept] | None = None
        if isinstance(system, str):
            concepts = [c.get("code") for c in part.get("concept") or [] if isinstance(c, dict)]
            filters: list[Mapping[str, Any]] = [
                f for f in part.get("filter") or [] if isinstance(f, dict)
            ]
            if concepts:
                found = {(system, c) for c in concepts if isinstance(c, str)}
            elif filters:
                found = self._filtered(system, filters, name)
            else:
                found = {(system, None)}
        for imported in part.get("valueSet") or []:
            codes = self._expand(str(imported), name, path)
            found = codes if found is None else _intersect(found, codes)
        return found or set()

    def _filtered(self, system: str, filters: list[Mapping[str, Any]], name: str) -> set[Concept]:
        code_system = self._code_system(system, name)
        result: set[str] | None = None
        for item in filters:
            op, value = item.get("op"), str(item.get("value") or "")
            if item.get("property") != "concept" or op not in ("is-a", "descendent-of"):
                raise InvalidValueError(
                    f"{name}: ValueSet filter {item.get('property')} {op} is not supported "
                    "(concept is-a and descendent-of are)",
                    param=name,
                )
            codes = set(code_system.closure(value, code_system.children))
            if op == "descendent-of":
                codes.discard(value)
            result = codes if result is None else result & codes
        return {(system, c) for c in result or ()}

    # -- CodeSystems --------------------------------------------------------------------------

    def _code_system(self, system: str, name: str) -> _CodeSystem:
        found = self._code_systems.get(_canonical(system)[0])
        if found is None:
            raise MissingTerminologyError(
                f"{name}: CodeSystem {system!r} is not stored in this project", param=name
            )
        return found

    def below(self, system: str, code: str, name: str) -> list[Concept]:
        """``code`` and the codes it subsumes in the stored CodeSystem ``system``."""
        code_system = self._code_system(system, name)
        return [(system, c) for c in code_system.closure(code, code_system.children)]

    def above(self, system: str, code: str, name: str) -> list[Concept]:
        """``code`` and the codes that subsume it in the stored CodeSystem ``system``."""
        code_system = self._code_system(system, name)
        return [(system, c) for c in code_system.closure(code, code_system.parents)]


def _contains(items: list[Any]) -> Iterator[Concept]:
    for item in items:
        if not isinstance(item, dict):
            continue
        system, code = item.get("system"), item.get("code")
        if isinstance(system, str) and isinstance(code, str):
            yield system, code
        yield from _contains(item.get("contains") or [])


def _intersect(left: set[Concept], right: set[Concept]) -> set[Concept]:
    """Concepts in both, where ``(system, None)`` holds every code of its system."""
    whole_left = {s for s, c in left if c is None}
    whole_right = {s for s, c in right if c is None}
    out = {x for x in left if x in right or (x[1] is not None and x[0] in whole_right)}
    out |= {x for x in right if x[1] is not None and x[0] in whole_left}
    out |= {(s, None) for s in whole_left & whole_right}
    return out
