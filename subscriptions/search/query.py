"""Typed search queries: what a parsed search string means.

A :class:`SearchQuery` is a conjunction (AND) of clauses; each clause is a disjunction (OR) of
values of one parameter. Values are parsed and normalised once, at parse time, so matching and
SQL compilation do no string work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fhirbots.subscriptions.search.extraction import Extractor
from fhirbots.subscriptions.search.registry import SearchParamDef

__all__ = [
    "ChainClause",
    "Clause",
    "CompositeClause",
    "CompositeValue",
    "DatePrefix",
    "DateValue",
    "HasClause",
    "MissingClause",
    "NumberValue",
    "ParamClause",
    "QuantityValue",
    "ReferenceValue",
    "SearchQuery",
    "SearchValue",
    "SimpleValue",
    "SortKey",
    "StringValue",
    "TokenValue",
    "UriValue",
]

DatePrefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


@dataclass(frozen=True, slots=True)
class StringValue:
    """A string search value (``norm`` is
    :func:`~fhirbots.subscriptions.search.values.normalize`d)."""

    raw: str
    norm: str


@dataclass(frozen=True, slots=True)
class TokenValue:
    """A token search value.

    ``system`` is None when no ``|`` was given (any system); ``""`` for ``|code`` (no system).
    ``code`` is None for ``system|`` (any code in the system). For ``:text`` the normalised text
    is in ``code``; for ``:of-type`` ``type_system``/``type_code`` hold the identifier type.
    ``implicit`` is set when ``system`` is the implicit code system of the parameter's ``code``
    element (:mod:`~fhirbots.subscriptions.search.implicit`): values without a system match too.
    """

    system: str | None
    code: str | None
    type_system: str | None = None
    type_code: str | None = None
    implicit: bool = False


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    """A reference search value.

    Exactly one form is used: ``ref_id`` (with ``ref_type`` or any of ``types``) for local
    references and bare ids, ``url`` for absolute/urn/canonical references, or
    ``id_system``/``id_value`` for ``:identifier``.
    """

    ref_type: str | None = None
    ref_id: str | None = None
    url: str | None = None
    id_system: str | None = None
    id_value: str | None = None
    types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DateValue:
    """A date search value: prefix and the inclusive microsecond range of the written value.

    For ``ap`` the range is already widened by the approximation margin.
    """

    prefix: DatePrefix
    low: int
    high: int


@dataclass(frozen=True, slots=True)
class NumberValue:
    """A number search value: prefix, the value and its implied-precision range ``[low, high)``.

    For ``ap`` ``[low, high]`` is the value +/- 10 %.
    """

    prefix: DatePrefix
    value: float
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class QuantityValue:
    """A quantity search value: a number plus optional unit system and code."""

    number: NumberValue
    system: str | None
    code: str | None


@dataclass(frozen=True, slots=True)
class UriValue:
    """A uri search value."""

    uri: str


SimpleValue = (
    StringValue | TokenValue | ReferenceValue | DateValue | NumberValue | QuantityValue | UriValue
)


@dataclass(frozen=True, slots=True)
class CompositeValue:
    """A composite search value ``a$b``: one value per component, all on the same element."""

    parts: tuple[SimpleValue, ...]


SearchValue = SimpleValue | CompositeValue


@dataclass(frozen=True, slots=True)
class ParamClause:
    """``param[:modifier]=v1,v2``: true when any value matches.

    Attributes:
        name: The parameter as written (``code:not``).
        param: Its definition.
        modifier: The modifier without ``:`` (``not``, ``exact``, ``Patient`` ...), if any.
        values: The OR-ed values.
        extract: Compiled extractor of the parameter's expression.
        predicate: The clause compiled over a resource's entries (values bound, modifier
            applied); set by the parser.
    """

    name: str
    param: SearchParamDef
    modifier: str | None
    values: tuple[SearchValue, ...]
    extract: Extractor = field(compare=False, hash=False, repr=False)
    predicate: Callable[[list[Any]], bool] | None = field(
        default=None, compare=False, hash=False, repr=False
    )


@dataclass(frozen=True, slots=True)
class MissingClause:
    """``param:missing=true|false``."""

    name: str
    param: SearchParamDef
    missing: bool
    extract: Extractor = field(compare=False, hash=False, repr=False)


@dataclass(frozen=True, slots=True)
class CompositeClause:
    """``composite=a$b,c$d``: some element selected by the parameter's expression has, for
    one of the values, every component matching its part.

    Attributes:
        name: The parameter as written.
        param: The composite's definition.
        values: The OR-ed composite values.
        extract: Selects the elements (e.g. the Observation itself, or its components).
        components: Per component: its type and an extractor relative to the element.
    """

    name: str
    param: SearchParamDef
    values: tuple[CompositeValue, ...]
    extract: Extractor = field(compare=False, hash=False, repr=False)
    components: tuple[tuple[str, Extractor], ...] = field(
        default=(), compare=False, hash=False, repr=False
    )


@dataclass(frozen=True, slots=True)
class ChainClause:
    """``ref:Type.param=v``: the referenced resource of ``target_type`` matches ``inner``."""

    name: str
    param: SearchParamDef
    target_type: str
    inner: Clause


@dataclass(frozen=True, slots=True)
class HasClause:
    """``_has:Type:ref:param=v``: some ``source_type`` resource whose ``ref`` points here
    matches ``inner``."""

    name: str
    source_type: str
    reference: SearchParamDef
    inner: Clause


Clause = ParamClause | MissingClause | CompositeClause | ChainClause | HasClause


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ``_sort`` key."""

    param: SearchParamDef
    descending: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A parsed search: clauses (AND) plus result parameters.

    Attributes:
        resource_type: The searched type; None for a system-level search.
        clauses: Clauses that must all hold.
        sort: ``_sort`` keys in order.
        count: ``_count`` (page size), if given.
        offset: ``_offset`` (first row of the page).
        total: ``_total`` (``none``, ``estimate``, ``accurate``), if given.
        summary: ``_summary``, if given.
        elements: ``_elements``, if given.
        include: ``_include`` values (``Type:param[:target]``), with ``:iterate`` kept as a
            ``:iterate`` suffix.
        revinclude: ``_revinclude`` values, same form.
    """

    resource_type: str | None
    clauses: tuple[Clause, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int | None = None
    offset: int = 0
    total: str | None = None
    summary: str | None = None
    elements: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    revinclude: tuple[str, ...] = ()
