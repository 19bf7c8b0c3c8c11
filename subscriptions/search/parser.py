"""Parse a FHIR search string into a typed
:class:`~fhirbots.subscriptions.search.query.SearchQuery`.

``Observation?code=http://loinc.org|8867-4&date=ge2020-01&subject=Patient/1`` becomes three
clauses, each with its values parsed for the parameter's type. Unknown parameters, modifiers
and malformed values raise a :class:`~fhirbots.subscriptions.search.errors.SearchParseError` naming
the parameter; in lenient mode (``Prefer: handling=lenient``) they are dropped and reported as
warnings instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import cast
from urllib.parse import unquote

from fhirbots.subscriptions.search.errors import (
    InvalidValueError,
    SearchError,
    UnknownModifierError,
    UnknownParameterError,
    UnsupportedSearchError,
)
from fhirbots.subscriptions.search.extraction import Extractor, compile_expression, compile_relative
from fhirbots.subscriptions.search.implicit import implicit_system
from fhirbots.subscriptions.search.matcher import compile_predicate
from fhirbots.subscriptions.search.query import (
    ChainClause,
    Clause,
    CompositeClause,
    CompositeValue,
    DatePrefix,
    DateValue,
    HasClause,
    MissingClause,
    NumberValue,
    ParamClause,
    QuantityValue,
    ReferenceValue,
    SearchQuery,
    SearchValue,
    SimpleValue,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
)
from fhirbots.subscriptions.search.registry import (
    ParamType,
    Registry,
    SearchParamDef,
    default_registry,
)
from fhirbots.subscriptions.search.terminology import (
    TERMINOLOGY_MODIFIERS,
    Concept,
    Terminology,
)
from fhirbots.subscriptions.search.values import normalize, parse_date_range

__all__ = ["ParseResult", "parse_params", "parse_search", "split_escaped", "unescape"]

PREFIXES: frozenset[str] = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
"""Comparison prefixes of date, number and quantity values (R4 search 3.1.1.4.1)."""

SUPPORTED_MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"missing", "exact", "contains"}),
    "token": frozenset({"missing", "not", "text", "of-type", "in", "not-in", "below", "above"}),
    "reference": frozenset({"missing", "identifier"}),
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"missing", "below", "above"}),
}
"""Modifiers implemented per type; the registry lists the ones the spec allows. The token
terminology modifiers (``:in``, ``:not-in``, ``:above``, ``:below``) are expanded against the
project's stored ValueSets and CodeSystems (:mod:`~fhirbots.subscriptions.search.terminology`)."""

RESULT_PARAMETERS: frozenset[str] = frozenset(
    {
        "_count",
        "_offset",
        "_sort",
        "_total",
        "_summary",
        "_elements",
        "_include",
        "_revinclude",
        "_format",
        "_pretty",
        "_contained",
        "_containedType",
    }
)
"""Parameters that shape the result rather than select resources."""

MAX_COUNT = 1000
"""Upper bound of ``_count``: larger pages are clamped to keep responses bounded."""

MAX_OFFSET = 10_000_000
"""Upper bound of ``_offset``: a deeper page is refused (each page costs its offset in rows
skipped, and a number past 64 bits would not reach the database at all)."""

MAX_CHAIN_LINKS = 3
"""Most references one chained parameter may follow (``subject:Patient.organization.name`` is
two): each link is a join, and deeper chains cost more than any answer is worth."""

AP_FRACTION = 0.1
"""``ap`` means within 10 % (of the value for numbers, of the distance to now for dates)."""

_US_PER_SECOND = 1_000_000
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True, slots=True)
class _Context:
    """What every clause of one parse needs: definitions, "now", the server's own base."""

    registry: Registry
    now_us: int
    base_url: str | None = None
    terminology: Terminology | None = None


@dataclass(frozen=True, slots=True)
class ParseResult:
    """A parsed query and the warnings of lenient parsing (empty in strict mode)."""

    query: SearchQuery
    warnings: tuple[str, ...] = ()


def split_escaped(text: str, sep: str) -> list[str]:
    """Split ``text`` on ``sep`` except where it is escaped with a backslash."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    """Remove search escapes (``\\,``, ``\\|``, ``\\$``, ``\\\\``)."""
    return re.sub(r"\\([,|$\\])", r"\1", text)


def parse_search(
    search: str,
    *,
    resource_type: str | None = None,
    registry: Registry | None = None,
    lenient: bool = False,
    now_us: int | None = None,
    base_url: str | None = None,
    terminology: Terminology | None = None,
) -> ParseResult:
    """Parse ``Type?a=b&c=d`` (or just ``a=b&c=d`` with ``resource_type``).

    Args:
        search: The search string; values are percent-decoded here (``+`` stays a plus, so
            time zones like ``+01:00`` survive).
        resource_type: The type when ``search`` has no ``Type?`` prefix; None for system level.
        registry: Parameter definitions; defaults to the shipped R4 registry.
        lenient: Drop bad parameters with a warning instead of raising.
        now_us: "Now" in microseconds since the epoch, for ``ap`` on dates (tests pin it).
        base_url: This server's FHIR base; absolute references under it search as local
            ``Type/id`` references.
        terminology: The project's ValueSets and CodeSystems, for ``:in``, ``:not-in``,
            ``:below`` and ``:above`` on tokens (None: none are stored).

    Returns:
        The typed query and any lenient-mode warnings.

    Raises:
        SearchError: In strict mode, for the first unknown, unsupported or malformed parameter.
    """
    text = search.strip()
    if "?" in text:
        type_part, text = text.split("?", 1)
        type_part = type_part.strip("/").rsplit("/", 1)[-1]
        resource_type = type_part or resource_type
    elif text and "=" not in text:
        resource_type, text = text.strip("/").rsplit("/", 1)[-1], ""
    pairs: list[tuple[str, str]] = []
    for item in text.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return parse_params(
        resource_type,
        pairs,
        registry=registry,
        lenient=lenient,
        now_us=now_us,
        base_url=base_url,
        terminology=terminology,
    )


def parse_params(
    resource_type: str | None,
    pairs: Iterable[tuple[str, str]],
    *,
    registry: Registry | None = None,
    lenient: bool = False,
    now_us: int | None = None,
    base_url: str | None = None,
    terminology: Terminology | None = None,
) -> ParseResult:
    """Parse decoded ``(name, value)`` pairs (e.g. a POST ``_search`` form) into a query.

    Args:
        resource_type: The searched type; None for a system-level search.
        pairs: Parameter names and decoded values, repeats allowed (AND).
        registry: Parameter definitions; defaults to the shipped R4 registry.
        lenient: Drop bad parameters with a warning instead of raising.
        now_us: "Now" in microseconds since the epoch, for ``ap`` on dates.
        base_url: This server's FHIR base (see :func:`parse_search`).
        terminology: The project's ValueSets and CodeSystems (see :func:`parse_search`).

    Returns:
        The typed query and any lenient-mode warnings.

    Raises:
        SearchError: In strict mode, for the first bad parameter.
    """
    reg = registry or default_registry()
    if resource_type is not None and resource_type not in reg.resource_types:
        raise UnknownParameterError(f"unknown resource type {resource_type!r}", param=None)
    now = now_us or int(time.time() * _US_PER_SECOND)
    base = base_url.rstrip("/") + "/" if base_url else None
    state = _State(_Context(reg, now, base, terminology), resource_type or "Resource")
    warnings: list[str] = []
    for name, value in pairs:
        try:
            state.add(name, value)
        except SearchError as exc:
            if not lenient:
                raise
            warnings.append(str(exc))
    return ParseResult(state.build(resource_type), tuple(warnings))


class _State:
    """Accumulates clauses and result parameters while parsing one query."""

    def __init__(self, context: _Context, resource_type: str) -> None:
        self.context = context
        self.registry = context.registry
        self.resource_type = resource_type
        self.clauses: list[Clause] = []
        self.sort: list[SortKey] = []
        self.count: int | None = None
        self.offset = 0
        self.total: str | None = None
        self.summary: str | None = None
        self.elements: list[str] = []
        self.include: list[str] = []
        self.revinclude: list[str] = []

    def build(self, resource_type: str | None) -> SearchQuery:
        return SearchQuery(
            resource_type=resource_type,
            clauses=tuple(self.clauses),
            sort=tuple(self.sort),
            count=self.count,
            offset=self.offset,
            total=self.total,
            summary=self.summary,
            elements=tuple(self.elements),
            include=tuple(self.include),
            revinclude=tuple(self.revinclude),
        )

    def add(self, name: str, value: str) -> None:
        base = name.split(":", 1)[0]
        if base in RESULT_PARAMETERS:
            self._result_parameter(name, value)
            return
        self.clauses.append(parse_clause(self.context, self.resource_type, name, value))

    def _result_parameter(self, name: str, value: str) -> None:
        base, _, modifier = name.partition(":")
        if base == "_count":
            self.count = min(_non_negative(name, value), MAX_COUNT)
        elif base == "_offset":
            self.offset = _non_negative(name, value)
            if self.offset > MAX_OFFSET:
                raise InvalidValueError(f"{name}: at most {MAX_OFFSET} is allowed", param=name)
        elif base == "_sort":
            for key in value.split(","):
                self.sort.append(self._sort_key(name, key.strip()))
        elif base == "_total":
            if value not in {"none", "estimate", "accurate"}:
                raise InvalidValueError(f"{name}: invalid value {value!r}", param=name)
            self.total = value
        elif base == "_summary":
            if value not in {"true", "false", "text", "data", "count"}:
                raise InvalidValueError(f"{name}: invalid value {value!r}", param=name)
            self.summary = value
        elif base == "_elements":
            self.elements.extend(v.strip() for v in value.split(",") if v.strip())
        elif base in {"_include", "_revinclude"}:
            if modifier not in {"", "iterate", "recurse"}:
                raise UnknownModifierError(f"{name}: unknown modifier {modifier!r}", param=name)
            if len(value.split(":")) not in {2, 3}:
                raise InvalidValueError(f"{name}: expected Type:param[:target]", param=name)
            target = self.include if base == "_include" else self.revinclude
            target.append(value + (":iterate" if modifier else ""))

    def _sort_key(self, name: str, key: str) -> SortKey:
        descending = key.startswith("-")
        code = key.lstrip("-")
        param = self.registry.get(self.resource_type, code)
        if param is None:
            raise UnknownParameterError(f"{name}: unknown sort parameter {code!r}", param=name)
        if not param.supported or param.type in {"reference", "composite"}:
            raise UnsupportedSearchError(f"{name}: cannot sort by {code!r}", param=name)
        return SortKey(param, descending)


def _non_negative(name: str, value: str) -> int:
    if not value.isdigit():
        raise InvalidValueError(
            f"{name}: expected a non-negative integer, got {value!r}", param=name
        )
    return int(value)


def _lookup(registry: Registry, resource_type: str, name: str, code: str) -> SearchParamDef:
    param = registry.get(resource_type, code)
    if param is None:
        raise UnknownParameterError(
            f"unknown search parameter {code!r} for {resource_type}", param=name
        )
    if not param.supported:
        raise UnsupportedSearchError(
            f"search parameter {code!r} ({param.type}) is not supported", param=name
        )
    return param


def parse_clause(context: _Context, resource_type: str, name: str, value: str) -> Clause:
    """Parse one ``name=value`` pair into a clause (chains and ``_has`` included).

    Args:
        context: Definitions, "now" and base of this parse.
        resource_type: The type the parameter applies to.
        name: The parameter name with modifier/chain, as written.
        value: The decoded value.

    Returns:
        The clause.

    Raises:
        SearchParseError: Unknown parameter or modifier, or malformed value.
        UnsupportedSearchError: A known but unsupported parameter or modifier.
    """
    registry = context.registry
    if name.startswith("_has:"):
        return _parse_has(context, resource_type, name, value)
    head, dot, chain = name.partition(".")
    code, _, modifier = head.partition(":")
    param = _lookup(registry, resource_type, name, code)
    if dot:
        return _parse_chain(context, param, name, modifier, chain, value)
    if modifier == "missing":
        if param.type == "composite":
            raise UnsupportedSearchError(f"{name}: :missing on a composite", param=name)
        if value not in {"true", "false"}:
            raise InvalidValueError(f"{name}: expected true or false, got {value!r}", param=name)
        return MissingClause(name, param, value == "true", _extractor(param))
    mod = _check_modifier(registry, param, name, modifier)
    if param.type == "token" and mod in TERMINOLOGY_MODIFIERS:
        return _terminology_clause(context, param, name, mod, value)
    if param.type == "composite":
        return _parse_composite(context, param, name, value)
    values = tuple(
        _parse_value(context, param, mod, unescape_part, name)
        for unescape_part in split_escaped(value, ",")
    )
    if any(v is None for v in values) or not values:
        raise InvalidValueError(f"{name}: empty value", param=name)
    typed = cast(tuple[SearchValue, ...], values)
    predicate = compile_predicate(param.type, mod, typed)
    return ParamClause(name, param, mod, typed, _extractor(param), predicate)


def _terminology_clause(
    context: _Context, param: SearchParamDef, name: str, modifier: str, value: str
) -> ParamClause:
    """``:in``/``:not-in``/``:below``/``:above`` as the plain token values they expand to
    (``:not-in`` as ``:not``), so SQL and the matcher need nothing of their own."""
    terminology = context.terminology or Terminology()
    concepts: list[Concept] = []
    for part in split_escaped(value, ","):
        text = unescape(part)
        if not text:
            raise InvalidValueError(f"{name}: empty value", param=name)
        if modifier in ("in", "not-in"):
            concepts.extend(terminology.expand(text, name))
            continue
        system, bar, code = text.partition("|")
        if not bar or not system or not code:
            raise InvalidValueError(f"{name}: expected system|code, got {text!r}", param=name)
        closure = terminology.below if modifier == "below" else terminology.above
        concepts.extend(closure(system, code, name))
    implicit = implicit_system(param)
    values = tuple(
        TokenValue(system, code, implicit=system == implicit)
        for system, code in dict.fromkeys(concepts)
    )
    negated = "not" if modifier == "not-in" else None
    predicate = compile_predicate("token", negated, values)
    return ParamClause(name, param, negated, values, _extractor(param), predicate)


def _extractor(param: SearchParamDef) -> Extractor:
    assert param.expression is not None  # guaranteed by SearchParamDef.supported
    return compile_expression(param.expression, param.resource_type)


def _check_modifier(
    registry: Registry, param: SearchParamDef, name: str, modifier: str
) -> str | None:
    if not modifier:
        return None
    if param.type == "reference" and modifier in registry.resource_types:
        if param.targets and modifier not in param.targets:
            raise InvalidValueError(
                f"{name}: {modifier} is not a target of {param.code!r}", param=name
            )
        return modifier
    if modifier not in param.modifiers:
        raise UnknownModifierError(
            f"{name}: unknown modifier {modifier!r} for {param.type} parameter {param.code!r}",
            param=name,
        )
    if modifier not in SUPPORTED_MODIFIERS.get(param.type, frozenset()):
        raise UnsupportedSearchError(f"{name}: modifier {modifier!r} is not supported", param=name)
    return modifier


def _component(param: SearchParamDef, index: int) -> SearchParamDef:
    """A component of a composite as a parameter of its own (for parsing its value part)."""
    return SearchParamDef(
        code=f"{param.code}${index}",
        type=cast(ParamType, param.component_types[index]),
        resource_type=param.resource_type,
        expression=param.components[index][1],
    )


def _parse_composite(context: _Context, param: SearchParamDef, name: str, value: str) -> Clause:
    count = len(param.components)
    values: list[CompositeValue] = []
    for alternative in split_escaped(value, ","):
        parts = split_escaped(alternative, "$")
        if len(parts) != count:
            raise InvalidValueError(
                f"{name}: expected {count} parts separated by '$', got {alternative!r}",
                param=name,
            )
        parsed = [
            _parse_value(context, _component(param, i), None, part, name)
            for i, part in enumerate(parts)
        ]
        if any(p is None or isinstance(p, CompositeValue) for p in parsed):
            raise InvalidValueError(f"{name}: empty part in {alternative!r}", param=name)
        values.append(CompositeValue(tuple(cast(list[SimpleValue], parsed))))
    components = tuple(
        (param.component_types[i], compile_relative(expr))
        for i, (_, expr) in enumerate(param.components)
    )
    return CompositeClause(name, param, tuple(values), _extractor(param), components)


def _parse_chain(
    context: _Context, param: SearchParamDef, name: str, modifier: str, chain: str, value: str
) -> Clause:
    registry = context.registry
    if param.type != "reference":
        raise InvalidValueError(f"{name}: only reference parameters can be chained", param=name)
    if chain.count(".") + 1 > MAX_CHAIN_LINKS:
        raise InvalidValueError(
            f"{name}: a chain may follow at most {MAX_CHAIN_LINKS} references", param=name
        )
    if modifier:
        if modifier not in registry.resource_types:
            raise UnknownModifierError(f"{name}: unknown chain type {modifier!r}", param=name)
        target = modifier
    else:
        candidates = [
            t for t in param.targets if registry.get(t, chain.partition(":")[0].partition(".")[0])
        ]
        if len(candidates) != 1:
            raise InvalidValueError(
                f"{name}: ambiguous chain, use {param.code}:<Type>.{chain}", param=name
            )
        target = candidates[0]
    inner = parse_clause(context, target, chain, value)
    return ChainClause(name, param, target, inner)


def _parse_has(context: _Context, resource_type: str, name: str, value: str) -> Clause:
    registry = context.registry
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts):
        raise InvalidValueError(f"{name}: expected _has:Type:reference:parameter", param=name)
    _, source_type, ref_code, inner_name = parts
    if source_type not in registry.resource_types:
        raise UnknownParameterError(f"{name}: unknown resource type {source_type!r}", param=name)
    reference = _lookup(registry, source_type, name, ref_code)
    if reference.type != "reference":
        raise InvalidValueError(f"{name}: {ref_code!r} is not a reference parameter", param=name)
    if reference.targets and resource_type not in reference.targets:
        raise InvalidValueError(
            f"{name}: {source_type}.{ref_code} cannot point to {resource_type}", param=name
        )
    inner = parse_clause(context, source_type, inner_name, value)
    return HasClause(name, source_type, reference, inner)


def _parse_value(
    context: _Context, param: SearchParamDef, modifier: str | None, text: str, name: str
) -> SearchValue | None:
    if text == "":
        return None
    ptype = param.type
    if ptype == "string":
        raw = unescape(text)
        return StringValue(raw, normalize(raw))
    if ptype == "token":
        value = _parse_token(modifier, text, name)
        if modifier in (None, "not") and value.system and value.system == implicit_system(param):
            return replace(value, implicit=True)
        return value
    if ptype == "reference":
        return _parse_reference(param, modifier, text, name, context.base_url)
    if ptype == "date":
        return _parse_date(text, name, context.now_us)
    if ptype == "number":
        return _parse_number(text, name)
    if ptype == "quantity":
        return _parse_quantity(text, name)
    if ptype == "uri":
        return UriValue(unescape(text))
    raise UnsupportedSearchError(f"{name}: {ptype} parameters are not supported", param=name)


def _parse_token(modifier: str | None, text: str, name: str) -> TokenValue:
    if modifier == "text":
        return TokenValue(None, normalize(unescape(text)))
    parts = [unescape(p) for p in split_escaped(text, "|")]
    if modifier == "of-type":
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise InvalidValueError(f"{name}: expected system|code|value", param=name)
        return TokenValue(None, parts[2], parts[0] or None, parts[1])
    if len(parts) == 1:
        return TokenValue(None, parts[0])
    if len(parts) == 2:
        if not parts[0] and not parts[1]:
            raise InvalidValueError(f"{name}: empty token {text!r}", param=name)
        return TokenValue(parts[0], parts[1] or None)
    raise InvalidValueError(f"{name}: too many '|' in token {text!r}", param=name)


def _parse_reference(
    param: SearchParamDef, modifier: str | None, text: str, name: str, base: str | None
) -> ReferenceValue:
    raw = unescape(text)
    if modifier == "identifier":
        parts = [unescape(p) for p in split_escaped(text, "|")]
        if len(parts) == 1:
            return ReferenceValue(id_value=parts[0])
        if len(parts) == 2 and parts[1]:
            return ReferenceValue(id_system=parts[0] or None, id_value=parts[1])
        raise InvalidValueError(f"{name}: expected [system|]value, got {text!r}", param=name)
    if "/_history/" in raw:
        raw = raw.split("/_history/", 1)[0]
    if base is not None and raw.startswith(base):
        raw = raw[len(base) :]
    if ":" in raw:
        return ReferenceValue(url=raw.split("|", 1)[0])
    pieces = raw.split("/")
    if len(pieces) == 2 and pieces[0] and pieces[1]:
        if modifier and pieces[0] != modifier:
            raise InvalidValueError(f"{name}: {raw!r} is not a {modifier}", param=name)
        return ReferenceValue(ref_type=pieces[0], ref_id=pieces[1])
    if len(pieces) != 1:
        raise InvalidValueError(f"{name}: malformed reference {raw!r}", param=name)
    if modifier:
        return ReferenceValue(ref_type=modifier, ref_id=raw)
    return ReferenceValue(ref_id=raw, types=param.targets)


def _split_prefix(text: str) -> tuple[DatePrefix, str]:
    if len(text) > 2 and text[:2] in PREFIXES and not text[:2].isdigit():
        return cast(DatePrefix, text[:2]), text[2:]
    return "eq", text


def _parse_date(text: str, name: str, now_us: int) -> DateValue:
    prefix, rest = _split_prefix(text)
    entry = parse_date_range(rest)
    if entry is None:
        raise InvalidValueError(f"{name}: invalid date {rest!r}", param=name)
    if prefix == "ap":
        margin = int(abs(now_us - entry.low) * AP_FRACTION)
        return DateValue(prefix, entry.low - margin, entry.high + margin)
    return DateValue(prefix, entry.low, entry.high)


def _parse_number(text: str, name: str) -> NumberValue:
    prefix, rest = _split_prefix(text)
    if not _NUMBER_RE.match(rest):
        raise InvalidValueError(f"{name}: invalid number {rest!r}", param=name)
    try:
        number = Decimal(rest)
    except InvalidOperation as exc:
        raise InvalidValueError(f"{name}: invalid number {rest!r}", param=name) from exc
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)  # finite by the regex above
    half = Decimal(5).scaleb(exponent - 1)
    if prefix == "ap":
        margin = abs(number) * Decimal(str(AP_FRACTION))
        return NumberValue(prefix, float(number), float(number - margin), float(number + margin))
    return NumberValue(prefix, float(number), float(number - half), float(number + half))


def _parse_quantity(text: str, name: str) -> QuantityValue:
    parts = [unescape(p) for p in split_escaped(text, "|")]
    if len(parts) not in {1, 3}:
        raise InvalidValueError(f"{name}: expected number|system|code, got {text!r}", param=name)
    number = _parse_number(parts[0], name)
    if len(parts) == 1:
        return QuantityValue(number, None, None)
    return QuantityValue(number, parts[1] or None, parts[2] or None)
