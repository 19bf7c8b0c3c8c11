"""Scopes through search: a search may only return or test types its caller may search.

A caller limited to some resource types (a bot's ``access``, an API key's scopes) must not
receive, nor learn about, other types through a search. :func:`check_search` lists every type
a parsed query *returns or tests* and refuses the whole search with 403 when one is outside the
caller's scope:

* the searched type; a system-level search (every type) needs a scope over every type (``*``);
* the target of each chained parameter (``Flag?subject:Patient.name=x`` tests Patient data),
  nested chains included;
* the source type of each reverse chain (``_has:Observation:subject:code=x``);
* each ``_include`` target: the one it names, or every type its parameter can point to (a
  parameter without declared targets, or ``*``, can point anywhere);
* each ``_revinclude`` source type.

Refusing rather than filtering is the rule because a chained search leaks through its result
set even when nothing of the other type is returned. Included resources are still filtered by
:func:`visible` as a second line, for references that point outside their parameter's targets.

The scope in force is a context variable (:func:`scoped`), set where a caller's identity is
known (the API's authentication, a bot's FHIR call) and read by
:class:`fhirbots.engine.fhir.search.SearchService` for every search it runs: the REST API,
search entries of batch and transaction Bundles, conditional interactions and the bots' API all
pass through it, so a new search feature is covered as soon as it is parsed into the query.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from fhirbots.engine.errors import Forbidden, Issue
from fhirbots.engine.storage.model import StoredResource
from fhirbots.subscriptions.search import Registry, SearchQuery
from fhirbots.subscriptions.search.query import ChainClause, Clause, HasClause

__all__ = [
    "ANY_TYPE",
    "SEARCH",
    "Scope",
    "check_search",
    "current_scope",
    "scoped",
    "touched_types",
    "visible",
]

ANY_TYPE = "*"
"""The type a scope names to cover every type; what a system-level search needs."""

SEARCH = "search"
"""The interaction every returned or tested type needs."""


@dataclass(frozen=True)
class Scope:
    """What a caller may do.

    Attributes:
        holder: Who is limited, for messages (``Bot/triage``, ``ApiKey/k1``).
        allows: ``(resource type, interaction) -> bool``; ``*`` as the type asks for every
            type.
    """

    holder: str
    allows: Callable[[str, str], bool]


_CURRENT: ContextVar[Scope | None] = ContextVar("fhirbots_scope", default=None)


def current_scope() -> Scope | None:
    """The scope of the caller being served (None: unlimited)."""
    return _CURRENT.get()


@contextmanager
def scoped(scope: Scope | None) -> Iterator[None]:
    """Run the body (and everything it awaits) under ``scope`` (None: unlimited)."""
    token = _CURRENT.set(scope)
    try:
        yield
    finally:
        _CURRENT.reset(token)


@dataclass(frozen=True)
class Touch:
    """A type a query returns or tests, and where."""

    resource_type: str
    why: str
    where: str


def _clause_touches(clause: Clause) -> Iterator[Touch]:
    if isinstance(clause, ChainClause):
        yield Touch(clause.target_type, "a chained parameter tests", clause.name)
        yield from _clause_touches(clause.inner)
    elif isinstance(clause, HasClause):
        yield Touch(clause.source_type, "a reverse chain (_has) tests", clause.name)
        yield from _clause_touches(clause.inner)


def _include_targets(registry: Registry, source: str, param: str) -> Iterable[str]:
    """The types ``source:param`` can point to (``*`` when any)."""
    codes = registry.codes(source) if param == ANY_TYPE else (param,)
    targets: list[str] = []
    for code in codes:
        definition = registry.get(source, code)
        if definition is None or definition.type != "reference":
            continue
        if not definition.targets:
            return (ANY_TYPE,)
        targets.extend(definition.targets)
    return targets


def touched_types(query: SearchQuery, registry: Registry) -> Iterator[Touch]:
    """Every type ``query`` returns or tests (repeats possible)."""
    if query.resource_type is None:
        yield Touch(ANY_TYPE, "a system-level search returns", "the search")
    else:
        yield Touch(query.resource_type, "the search returns", "the search")
    for clause in query.clauses:
        yield from _clause_touches(clause)
    for spec in query.include:
        parts = spec.removesuffix(":iterate").split(":")
        where = f"_include={spec.removesuffix(':iterate')}"
        yield Touch(parts[0], "_include starts from", where)
        if len(parts) >= 3:
            yield Touch(parts[2], "_include returns", where)
        elif len(parts) == 2:
            for target in _include_targets(registry, parts[0], parts[1]):
                yield Touch(target, "_include can return", where)
    for spec in query.revinclude:
        source = spec.split(":", 1)[0]
        where = f"_revinclude={spec.removesuffix(':iterate')}"
        yield Touch(source, "_revinclude returns", where)


def check_search(query: SearchQuery, registry: Registry, scope: Scope | None = None) -> None:
    """Refuse ``query`` when it returns or tests a type outside ``scope`` (by default the
    current one).

    Raises:
        Forbidden: 403 naming the holder, the type, how the query reaches it, and the scope that
            would allow it.
    """
    scope = scope if scope is not None else current_scope()
    if scope is None:
        return
    seen: set[str] = set()
    for touch in touched_types(query, registry):
        if touch.resource_type in seen:
            continue
        seen.add(touch.resource_type)
        if scope.allows(touch.resource_type, SEARCH):
            continue
        kind = "every type" if touch.resource_type == ANY_TYPE else touch.resource_type
        message = (
            f"{scope.holder} may not search {kind}, which {touch.why} ({touch.where}): its "
            f'scopes need {{"resourceType": "{touch.resource_type}", "interaction": '
            f'["{SEARCH}"]}}'
        )
        if touch.why.startswith("_include can"):
            message += f"; or name the target type as {touch.where}:<Type>"
        raise Forbidden(message, issues=(Issue(message, code="forbidden"),))


def visible(resources: list[StoredResource], scope: Scope | None = None) -> list[StoredResource]:
    """``resources`` whose type ``scope`` (by default the current one) may search."""
    scope = scope if scope is not None else current_scope()
    if scope is None:
        return resources
    return [r for r in resources if scope.allows(r.resource_type, SEARCH)]
