"""In-memory evaluation of a parsed query against one resource.

``matches(query, resource)`` is what the subscription matcher calls for each change event: no
database, only the resource. Every parameter type, modifier, prefix and composites are
evaluated on the same entries the SQL index stores. Chained parameters and ``_has`` need other
resources and raise :class:`~fhirbots.subscriptions.search.errors.NotSupportedInMemoryError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhirbots.subscriptions.search.entries import ENTRY_BUILDERS
from fhirbots.subscriptions.search.errors import NotSupportedInMemoryError
from fhirbots.subscriptions.search.query import (
    ChainClause,
    Clause,
    CompositeClause,
    DateValue,
    HasClause,
    MissingClause,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchQuery,
    StringValue,
    TokenValue,
    UriValue,
)
from fhirbots.subscriptions.search.values import (
    DateEntry,
    NumberEntry,
    QuantityEntry,
    ReferenceEntry,
    StringEntry,
    TokenEntry,
    UriEntry,
)

__all__ = ["EntryCache", "check_in_memory", "clause_matches", "compile_predicate", "matches"]


EntryCache = dict[tuple[str, str], list[Any]]
"""Entries of one resource by (parameter type, expression), shared by the queries run on it."""


def matches(
    query: SearchQuery, resource: dict[str, Any], *, cache: EntryCache | None = None
) -> bool:
    """Whether ``resource`` satisfies every clause of ``query``.

    Args:
        query: A parsed query (result parameters such as ``_sort`` are ignored).
        resource: The resource as a JSON dict.
        cache: A dict kept for this one resource while many queries run on it (the
            subscription matcher's case): each parameter's values are extracted once.

    Returns:
        True when the resource type fits and all clauses hold.

    Raises:
        NotSupportedInMemoryError: The query has chained or ``_has`` clauses.
    """
    if query.resource_type is not None and resource.get("resourceType") != query.resource_type:
        return False
    return all(clause_matches(clause, resource, cache) for clause in query.clauses)


def check_in_memory(query: SearchQuery) -> None:
    """Raise :class:`NotSupportedInMemoryError` if ``query`` cannot run on a lone resource.

    Lets the subscription layer reject criteria when a Subscription is created rather than
    at the first event.
    """
    for clause in query.clauses:
        if isinstance(clause, ChainClause | HasClause):
            raise NotSupportedInMemoryError(
                f"{clause.name}: chained and _has parameters need the datastore",
                param=clause.name,
            )


def clause_matches(
    clause: Clause, resource: dict[str, Any], cache: EntryCache | None = None
) -> bool:
    """Whether one clause holds for ``resource`` (``cache`` as in :func:`matches`).

    Raises:
        NotSupportedInMemoryError: For chained and ``_has`` clauses.
    """
    if isinstance(clause, ChainClause | HasClause):
        raise NotSupportedInMemoryError(
            f"{clause.name}: chained and _has parameters need the datastore", param=clause.name
        )
    param = clause.param
    if cache is None:
        entries = None
    else:
        key = (param.type, param.expression or "")
        entries = cache.get(key)
    if entries is None:
        selected = clause.extract(resource)
        if param.type == "composite":
            entries = selected  # the elements; components are read per element
        else:
            entries = ENTRY_BUILDERS[param.type](selected) if selected else []
        if cache is not None:
            cache[(param.type, param.expression or "")] = entries
    if isinstance(clause, MissingClause):
        return (not entries) == clause.missing
    if isinstance(clause, CompositeClause):
        return _composite(clause, entries)
    if clause.predicate is not None:
        return clause.predicate(entries)
    test = _TESTS[clause.param.type]
    modifier = clause.modifier
    if modifier == "not":
        return not any(test(None, e, v) for v in clause.values for e in entries)
    return any(test(modifier, e, v) for v in clause.values for e in entries)


def _composite(clause: CompositeClause, elements: list[Any]) -> bool:
    for element in elements:
        parts: list[list[Any]] = []
        for param_type, extract in clause.components:
            selected = extract(element) if isinstance(element, dict) else []
            parts.append(ENTRY_BUILDERS[param_type](selected) if selected else [])
        for value in clause.values:
            if all(
                any(_TESTS[param_type](None, e, part) for e in parts[i])
                for i, ((param_type, _), part) in enumerate(
                    zip(clause.components, value.parts, strict=True)
                )
            ):
                return True
    return False


def _string(modifier: str | None, entry: StringEntry, value: StringValue) -> bool:
    if modifier == "exact":
        return entry.exact == value.raw
    if modifier == "contains":
        return value.norm in entry.norm
    return entry.norm.startswith(value.norm)


def _token(modifier: str | None, entry: TokenEntry, value: TokenValue) -> bool:
    if modifier == "text":
        return (
            entry.text is not None and value.code is not None and entry.text.startswith(value.code)
        )
    if modifier == "of-type":
        return (
            entry.code == value.code
            and entry.type_code == value.type_code
            and (value.type_system is None or entry.type_system == value.type_system)
        )
    if value.system is None:
        return entry.code == value.code
    if value.system == "":
        return entry.system is None and entry.code == value.code
    in_system = entry.system == value.system or (value.implicit and entry.system is None)
    if value.code is None:
        return in_system
    return in_system and entry.code == value.code


def _reference(_modifier: str | None, entry: ReferenceEntry, value: ReferenceValue) -> bool:
    if value.id_value is not None:
        return entry.id_value == value.id_value and (
            value.id_system is None or entry.id_system == value.id_system
        )
    if value.url is not None:
        return entry.url == value.url
    if entry.ref_id != value.ref_id:
        return False
    if value.ref_type is not None:
        return entry.ref_type == value.ref_type
    return not value.types or entry.ref_type in value.types


def _date(_modifier: str | None, entry: DateEntry, value: DateValue) -> bool:
    rl, rh, sl, sh = entry.low, entry.high, value.low, value.high
    prefix = value.prefix
    within = rl >= sl and rh <= sh
    if prefix == "eq":
        return within
    if prefix == "ne":
        return not within
    if prefix == "gt":
        return rh > sh
    if prefix == "lt":
        return rl < sl
    if prefix == "ge":
        return rh >= sl  # the resource reaches the searched range (as HAPI and Medplum)
    if prefix == "le":
        return rl <= sh  # the resource starts within or before the searched range
    if prefix == "sa":
        return rl > sh
    if prefix == "eb":
        return rh < sl
    return rl <= sh and rh >= sl  # ap: ranges overlap (search range already widened)


def number_test(rl: float, rh: float, value: NumberValue) -> bool:
    """Compare a resource number or range ``[rl, rh]`` with a number search value."""
    prefix, v = value.prefix, value.value
    within = rl >= value.low and rh < value.high
    if prefix == "eq":
        return within
    if prefix == "ne":
        return not within
    if prefix == "gt":
        return rh > v
    if prefix == "lt":
        return rl < v
    if prefix == "ge":
        return rh >= v
    if prefix == "le":
        return rl <= v
    if prefix == "sa":
        return rl > v
    if prefix == "eb":
        return rh < v
    return rl <= value.high and rh >= value.low  # ap: within +/- 10 %


def _number(_modifier: str | None, entry: NumberEntry, value: NumberValue) -> bool:
    return number_test(entry.low, entry.high, value)


def _quantity(_modifier: str | None, entry: QuantityEntry, value: QuantityValue) -> bool:
    if value.system is not None and entry.system != value.system:
        return False
    if value.code is not None:
        if value.system is not None:
            if entry.code != value.code:
                return False
        elif entry.code != value.code and entry.unit != value.code:
            return False
    return number_test(entry.low, entry.high, value.number)


def _uri(modifier: str | None, entry: UriEntry, value: UriValue) -> bool:
    if modifier == "below":
        return entry.uri.startswith(value.uri)
    if modifier == "above":
        return value.uri.startswith(entry.uri)
    return entry.uri == value.uri


_TESTS: dict[str, Callable[[str | None, Any, Any], bool]] = {
    "string": _string,
    "token": _token,
    "reference": _reference,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "uri": _uri,
}


EntryTest = Callable[[Any], bool]
Predicate = Callable[[list[Any]], bool]


def _entry_test(param_type: str, modifier: str | None, value: Any) -> EntryTest:
    """One value as a test of one entry: the common token and reference forms as direct
    comparisons, the rest through the per-type test above (same semantics)."""
    if param_type == "token" and modifier is None and not value.implicit:
        system, code = value.system, value.code
        if system is None:
            return lambda e: bool(e.code == code)
        if system == "":
            return lambda e: e.code == code and e.system is None
        if code is None:
            return lambda e: bool(e.system == system)
        return lambda e: e.code == code and e.system == system
    if (
        param_type == "reference"
        and value.ref_type is not None
        and value.ref_id is not None
        and value.url is None
        and value.id_value is None
    ):
        ref_type, ref_id = value.ref_type, value.ref_id
        return lambda e: e.ref_id == ref_id and e.ref_type == ref_type
    test = _TESTS[param_type]
    return lambda e: test(modifier, e, value)


def compile_predicate(param_type: str, modifier: str | None, values: tuple[Any, ...]) -> Predicate:
    """Compile one clause (OR of ``values``, ``modifier`` applied) into a test of a resource's
    entries for the parameter. The parser does this once per clause.

    Args:
        param_type: The parameter's type (not composite).
        modifier: The clause's modifier; ``not`` negates the whole clause.
        values: The parsed values.

    Returns:
        A function from the entry list to whether the clause holds.
    """
    negate = modifier == "not"
    tests = [_entry_test(param_type, None if negate else modifier, v) for v in values]

    def any_entry(entries: list[Any]) -> bool:
        for entry in entries:
            for test in tests:
                if test(entry):
                    return True
        return False

    if negate:
        return lambda entries: not any_entry(entries)
    return any_entry
