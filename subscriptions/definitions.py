"""Subscription and SubscriptionTopic resources -> :mod:`fhirbots.subscriptions.model` objects.

Parsing is validation: anything the engine could not evaluate raises a
:class:`~fhirbots.subscriptions.errors.CriteriaError` naming the element, so a Subscription is
refused when it is written (422) rather than ignored at match time.

Recognised forms:

* R4 ``Subscription.criteria`` search strings (``Observation?code=...``), evaluated with the
  search semantics of :mod:`fhirbots.subscriptions.search`;
* Medplum's extensions: ``fhir-path-criteria-expression`` (a FHIRPath criterion with
  ``%previous``/``%current``) and ``subscription-supported-interaction`` (repeatable);
* the R4 Subscriptions Backport IG: ``criteria`` names a SubscriptionTopic canonical, filters in
  ``_criteria`` ``backport-filter-criteria`` extensions, ``backport-payload-content`` on
  ``channel._payload``, ``backport-heartbeat-period``/``-timeout``/``-max-count`` on the channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from fhirbots.schemas.events import Interaction
from fhirbots.schemas.notifications import ChannelSpec, ContentLevel
from fhirbots.subscriptions.errors import CriteriaError, EvaluationError
from fhirbots.subscriptions.fhirpath import compile_fhirpath, evaluate_fhirpath
from fhirbots.subscriptions.model import (
    ALL_INTERACTIONS,
    CRITERIA_ERROR_URL,
    DEFAULT_INTERACTIONS,
    Criterion,
    SubscriptionSpec,
    SubscriptionStatus,
    Topic,
    TopicTrigger,
)
from fhirbots.subscriptions.search import (
    SearchError,
    check_in_memory,
    default_registry,
    parse_search,
)
from fhirbots.subscriptions.search.project import ProjectSearch

__all__ = [
    "BACKPORT",
    "FHIRPATH_CRITERIA_URL",
    "INTERACTION_URL",
    "canonical_url",
    "criteria_warnings",
    "is_topic_criteria",
    "parse_criterion",
    "parse_subscription",
    "parse_topic",
]

FHIRPATH_CRITERIA_URL = "https://medplum.com/fhir/StructureDefinition/fhir-path-criteria-expression"
"""Medplum's extension holding a FHIRPath criterion (kept so Medplum Subscriptions work)."""

INTERACTION_URL = "https://medplum.com/fhir/StructureDefinition/subscription-supported-interaction"
"""Medplum's extension naming one interaction to fire on (repeatable)."""

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
"""Prefix of the Subscriptions Backport IG's extensions and profiles."""

FILTER_URL = BACKPORT + "backport-filter-criteria"
CONTENT_URL = BACKPORT + "backport-payload-content"
HEARTBEAT_URL = BACKPORT + "backport-heartbeat-period"
TIMEOUT_URL = BACKPORT + "backport-timeout"
MAX_COUNT_URL = BACKPORT + "backport-max-count"
BACKPORT_PROFILE = BACKPORT + "backport-subscription"

STATUSES: frozenset[str] = frozenset({"requested", "active", "error", "off"})
CHANNEL_TYPES: frozenset[str] = frozenset({"rest-hook", "websocket", "message", "email"})
"""Channel types with a delivery; R4's ``sms`` has none and is refused."""
CONTENT_LEVELS: frozenset[str] = frozenset({"empty", "id-only", "full-resource"})
IGNORED_PARAMETERS: frozenset[str] = frozenset(
    {"_sort", "_count", "_offset", "_total", "_summary", "_elements", "_include", "_revinclude"}
)
"""Parameters that shape a result set: meaningless for a subscription. Existing Subscriptions
(written for HAPI or Medplum) carry them, so they are accepted, ignored and reported as a
warning (``Criterion.warnings``: logged at write time and shown by ``$explain``)."""

_STRUCTURE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
_URL_SCHEMES = ("http://", "https://", "urn:")


def canonical_url(text: str) -> str:
    """A canonical without its ``|version`` suffix."""
    return text.split("|", 1)[0].strip()


def is_topic_criteria(resource: Mapping[str, Any], topics: Mapping[str, Topic]) -> bool:
    """Whether a Subscription names a topic (Backport IG) rather than a search string."""
    criteria = str(resource.get("criteria") or "")
    if canonical_url(criteria) in topics:
        return True
    profiles = (resource.get("meta") or {}).get("profile") or []
    if BACKPORT_PROFILE in profiles:
        return True
    return criteria.startswith(_URL_SCHEMES) and "?" not in criteria


def parse_criterion(
    text: str,
    expression: str,
    *,
    resource_type: str | None = None,
    search: ProjectSearch | None = None,
) -> Criterion:
    """Parse a search string into a :class:`Criterion` that can run on one resource.

    Args:
        text: ``Type?params`` (or just ``params`` when ``resource_type`` is given).
        expression: The element it comes from, for error messages.
        resource_type: The type when ``text`` does not start with one.
        search: The project's SearchParameters, ValueSets and CodeSystems (None: the R4
            registry alone, no terminology).

    Raises:
        CriteriaError: Unknown type, parameter, modifier or prefix, a malformed value, chained
            or ``_has`` parameters (result parameters such as ``_sort`` are dropped with a
            warning instead, see :data:`IGNORED_PARAMETERS`); a ValueSet or CodeSystem a
            terminology modifier needs is not stored.
    """
    kept, warnings = _without_result_parameters(text, expression)
    definitions = search or ProjectSearch()
    try:
        query = parse_search(
            kept,
            resource_type=resource_type,
            registry=definitions.registry,
            terminology=definitions.terminology,
        ).query
        check_in_memory(query)
    except SearchError as exc:
        raise CriteriaError(f"{expression}: {exc}", expression=expression) from exc
    if query.resource_type is None:
        raise CriteriaError(f"{expression}: {text!r} names no resource type", expression=expression)
    if resource_type is not None and query.resource_type != resource_type:
        raise CriteriaError(
            f"{expression}: {text!r} searches {query.resource_type}, not {resource_type}",
            expression=expression,
        )
    return Criterion(text=text, query=query, expression=expression, warnings=warnings)


def criteria_warnings(resource: Mapping[str, Any]) -> tuple[str, ...]:
    """The warnings a Subscription's criteria and filters carry: each result parameter that is
    accepted and ignored (see :data:`IGNORED_PARAMETERS`). Needs no parsing of the rest, so the
    REST layer can report them on a write (``Prefer: return=OperationOutcome``)."""
    if resource.get("resourceType") != "Subscription":
        return ()
    found = list(
        _without_result_parameters(str(resource.get("criteria") or ""), "Subscription.criteria")[1]
    )
    for i, extension in enumerate(_extensions(resource.get("_criteria"), FILTER_URL)):
        where = f"Subscription.criteria.extension[{i}]"
        found.extend(_without_result_parameters(str(_value(extension) or ""), where)[1])
    return tuple(found)


def _without_result_parameters(text: str, expression: str) -> tuple[str, tuple[str, ...]]:
    """``text`` without its :data:`IGNORED_PARAMETERS`, and a warning for each one dropped."""
    head, mark, params = text.partition("?")
    if not mark and "=" in head:
        head, params = "", head
    kept: list[str] = []
    warnings: list[str] = []
    for item in params.split("&"):
        name = item.partition("=")[0].partition(":")[0]
        if name in IGNORED_PARAMETERS:
            warnings.append(
                f"{expression}: {item} shapes search results and is ignored in a criterion"
            )
        elif item:
            kept.append(item)
    if not warnings:
        return text, ()
    joined = "&".join(kept)
    rebuilt = f"{head}?{joined}" if mark else joined
    return (rebuilt if rebuilt != "?" else head), tuple(warnings)


def _check_fhirpath(expression_text: str, where: str, resource_type: str | None) -> str:
    try:
        compile_fhirpath(expression_text)
        # A dry run on an empty resource catches unknown functions, which fhirpathpy only
        # reports when it evaluates them.
        empty = {"resourceType": resource_type or "Resource"}
        evaluate_fhirpath(expression_text, empty, empty)
    except (CriteriaError, EvaluationError) as exc:
        raise CriteriaError(f"{where}: {exc}", expression=where) from exc
    return expression_text


def _extensions(element: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(element, dict):
        return []
    return [e for e in element.get("extension") or [] if e.get("url") == url]


def _value(extension: dict[str, Any]) -> Any:
    for key, value in extension.items():
        if key.startswith("value"):
            return value
    return None


def _resource_type_of(text: str, where: str) -> str:
    name = text[len(_STRUCTURE_PREFIX) :] if text.startswith(_STRUCTURE_PREFIX) else text
    if name not in default_registry().resource_types:
        raise CriteriaError(f"{where}: unknown resource type {text!r}", expression=where)
    return name


def _result(value: Any, where: str) -> bool:
    if value is None:
        return False
    if value not in ("test-passes", "test-fails"):
        raise CriteriaError(f"{where}: expected test-passes or test-fails", expression=where)
    return bool(value == "test-passes")


def _interactions(values: list[Any], where: str) -> frozenset[Interaction]:
    out: set[Interaction] = set()
    for value in values:
        if value not in ALL_INTERACTIONS:
            raise CriteriaError(f"{where}: unsupported interaction {value!r}", expression=where)
        out.add(cast(Interaction, value))
    return frozenset(out)


def _trigger(index: int, trigger: dict[str, Any], search: ProjectSearch | None) -> TopicTrigger:
    where = f"SubscriptionTopic.resourceTrigger[{index}]"
    resource_type = _resource_type_of(str(trigger.get("resource") or ""), f"{where}.resource")
    supported = trigger.get("supportedInteraction") or []
    interactions = (
        _interactions(supported, f"{where}.supportedInteraction") if supported else ALL_INTERACTIONS
    )
    query = trigger.get("queryCriteria") or {}
    previous = current = None
    if query.get("previous"):
        previous = parse_criterion(
            query["previous"],
            f"{where}.queryCriteria.previous",
            resource_type=resource_type,
            search=search,
        )
    if query.get("current"):
        current = parse_criterion(
            query["current"],
            f"{where}.queryCriteria.current",
            resource_type=resource_type,
            search=search,
        )
    fhirpath = trigger.get("fhirPathCriteria")
    if fhirpath is not None:
        _check_fhirpath(fhirpath, f"{where}.fhirPathCriteria", resource_type)
    return TopicTrigger(
        index=index,
        resource_type=resource_type,
        interactions=interactions,
        previous=previous,
        current=current,
        result_for_create=_result(
            query.get("resultForCreate"), f"{where}.queryCriteria.resultForCreate"
        ),
        result_for_delete=_result(
            query.get("resultForDelete"), f"{where}.queryCriteria.resultForDelete"
        ),
        require_both=bool(query.get("requireBoth", False)),
        fhirpath=fhirpath,
    )


def _can_filter_by(
    topic: dict[str, Any], search: ProjectSearch | None
) -> dict[str, dict[str, frozenset[str]]]:
    registry = (search or ProjectSearch()).registry
    allowed: dict[str, dict[str, frozenset[str]]] = {}
    for i, item in enumerate(topic.get("canFilterBy") or []):
        where = f"SubscriptionTopic.canFilterBy[{i}]"
        resource = item.get("resource")
        resource_type = _resource_type_of(resource, f"{where}.resource") if resource else ""
        code = item.get("filterParameter")
        if not code:
            raise CriteriaError(f"{where}.filterParameter is required", expression=where)
        if resource_type and registry.get(resource_type, code) is None:
            raise CriteriaError(
                f"{where}.filterParameter: {resource_type} has no search parameter {code!r}",
                expression=f"{where}.filterParameter",
            )
        allowed.setdefault(resource_type, {})[code] = frozenset(item.get("modifier") or ())
    return allowed


def parse_topic(resource: Mapping[str, Any], search: ProjectSearch | None = None) -> Topic:
    """Parse a SubscriptionTopic (``search``: the project's definitions, see
    :func:`parse_criterion`).

    Raises:
        CriteriaError: A trigger or filter the engine cannot evaluate; event triggers (which
            need events the engine does not define) are refused too.
    """
    url = resource.get("url")
    if not url:
        raise CriteriaError(
            "SubscriptionTopic.url is required: subscriptions name a topic by it",
            expression="SubscriptionTopic.url",
        )
    if resource.get("eventTrigger"):
        raise CriteriaError(
            "SubscriptionTopic.eventTrigger is not supported: use resourceTrigger",
            expression="SubscriptionTopic.eventTrigger",
        )
    triggers = tuple(
        _trigger(i, t, search) for i, t in enumerate(resource.get("resourceTrigger") or [])
    )
    if not triggers:
        raise CriteriaError(
            "SubscriptionTopic.resourceTrigger: a topic needs at least one",
            expression="SubscriptionTopic.resourceTrigger",
        )
    return Topic(
        id=str(resource.get("id") or ""),
        url=canonical_url(str(url)),
        status=str(resource.get("status") or "unknown"),
        triggers=triggers,
        can_filter_by=_can_filter_by(dict(resource), search),
    )


def _positive_int(channel: dict[str, Any], url: str, name: str) -> int | None:
    found = _extensions(channel, url)
    if not found:
        return None
    value = _value(found[0])
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        where = f"Subscription.channel.extension({name})"
        raise CriteriaError(f"{where}: expected a non-negative integer", expression=where)
    return value


def _channel(resource: Mapping[str, Any]) -> ChannelSpec:
    channel = resource.get("channel") or {}
    kind = channel.get("type")
    if kind not in CHANNEL_TYPES:
        raise CriteriaError(
            f"Subscription.channel.type {kind!r} is not supported "
            f"(supported: {', '.join(sorted(CHANNEL_TYPES))})",
            expression="Subscription.channel.type",
        )
    endpoint = channel.get("endpoint")
    payload = channel.get("payload")
    content_ext = _extensions(channel.get("_payload"), CONTENT_URL)
    content: str
    if content_ext:
        content = str(_value(content_ext[0]))
        if content not in CONTENT_LEVELS:
            raise CriteriaError(
                f"Subscription.channel.payload content {content!r} is not one of "
                f"{', '.join(sorted(CONTENT_LEVELS))}",
                expression="Subscription.channel.payload",
            )
    elif payload or (endpoint or "").startswith("Bot/"):
        content = "full-resource"
    else:
        content = "empty"
    return ChannelSpec(
        type=kind,
        endpoint=endpoint,
        payload=payload,
        content=cast(ContentLevel, content),
        headers=tuple(channel.get("header") or ()),
        heartbeat_period=_positive_int(channel, HEARTBEAT_URL, "heartbeat-period"),
        timeout=_positive_int(channel, TIMEOUT_URL, "timeout"),
        max_count=_positive_int(channel, MAX_COUNT_URL, "max-count"),
    )


def _filters(
    resource: Mapping[str, Any], topic: Topic, search: ProjectSearch | None
) -> tuple[Criterion, ...]:
    filters: list[Criterion] = []
    default_type = next(iter(topic.resource_types)) if len(topic.resource_types) == 1 else None
    for i, extension in enumerate(_extensions(resource.get("_criteria"), FILTER_URL)):
        where = f"Subscription.criteria.extension[{i}]"
        text = str(_value(extension) or "")
        has_type = "?" in text
        criterion = parse_criterion(
            text, where, resource_type=None if has_type else default_type, search=search
        )
        resource_type = criterion.resource_type
        if resource_type not in topic.resource_types:
            raise CriteriaError(
                f"{where}: topic {topic.url} has no trigger for {resource_type}",
                expression=where,
            )
        allowed = {**topic.can_filter_by.get("", {}), **topic.can_filter_by.get(resource_type, {})}
        for clause in criterion.query.clauses:
            code, _, modifier = clause.name.partition(":")
            if code not in allowed:
                raise CriteriaError(
                    f"{where}: topic {topic.url} cannot filter {resource_type} by {code!r} "
                    f"(canFilterBy: {', '.join(sorted(allowed)) or 'nothing'})",
                    expression=where,
                )
            modifiers = allowed[code]
            if modifier and modifiers and modifier not in modifiers:
                raise CriteriaError(
                    f"{where}: topic {topic.url} does not allow {code}:{modifier}",
                    expression=where,
                )
        filters.append(criterion)
    return tuple(filters)


def _end(resource: Mapping[str, Any]) -> datetime | None:
    end = resource.get("end")
    if not end:
        return None
    try:
        parsed = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
    except ValueError as exc:
        raise CriteriaError(
            f"Subscription.end {end!r} is not an instant", expression="Subscription.end"
        ) from exc
    # An instant has a zone; a bare date or dateTime is read as UTC rather than refused.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _since(resource: Mapping[str, Any]) -> datetime | None:
    stamp = (resource.get("meta") or {}).get("lastUpdated")
    if not stamp:
        return None  # not stored yet (a check before the first write)
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_subscription(
    resource: Mapping[str, Any],
    topics: Mapping[str, Topic],
    search: ProjectSearch | None = None,
) -> SubscriptionSpec:
    """Parse a Subscription.

    Args:
        resource: The Subscription resource (with ``id`` and ``meta.versionId`` once stored).
        topics: The project's topics by canonical URL (for topic subscriptions).
        search: The project's SearchParameters, ValueSets and CodeSystems (None: the R4
            registry alone, no terminology).

    Raises:
        CriteriaError: A criterion, filter, interaction, channel or status the engine cannot
            honour; a topic that is not known.
    """
    status = resource.get("status")
    if status not in STATUSES:
        raise CriteriaError(
            f"Subscription.status {status!r} is not one of {', '.join(sorted(STATUSES))}",
            expression="Subscription.status",
        )
    channel = _channel(resource)
    criteria_text = str(resource.get("criteria") or "").strip()
    if not criteria_text:
        raise CriteriaError("Subscription.criteria is required", expression="Subscription.criteria")
    common: dict[str, Any] = {
        "id": str(resource.get("id") or ""),
        "version_id": str((resource.get("meta") or {}).get("versionId") or ""),
        "status": cast(SubscriptionStatus, status),
        "channel": channel,
        "end": _end(resource),
        "error": resource.get("error"),
        "since": _since(resource),
        "criteria_failed": any(
            e.get("valueBoolean") is True for e in _extensions(resource, CRITERIA_ERROR_URL)
        ),
    }
    if is_topic_criteria(resource, topics):
        url = canonical_url(criteria_text)
        topic = topics.get(url)
        if topic is None:
            raise CriteriaError(
                f"Subscription.criteria: unknown SubscriptionTopic {url!r}",
                expression="Subscription.criteria",
            )
        return SubscriptionSpec(
            **common,
            topic_url=url,
            filters=_filters(resource, topic, search),
            interactions=frozenset(),
        )
    criterion = parse_criterion(criteria_text, "Subscription.criteria", search=search)
    fhirpath = None
    fhirpath_ext = _extensions(resource, FHIRPATH_CRITERIA_URL)
    if len(fhirpath_ext) > 1:
        raise CriteriaError(
            "Subscription.extension: at most one FHIRPath criteria extension",
            expression="Subscription.extension",
        )
    if fhirpath_ext:
        fhirpath = _check_fhirpath(
            str(_value(fhirpath_ext[0]) or ""),
            "Subscription.extension(fhir-path-criteria-expression)",
            criterion.resource_type,
        )
    asked = [_value(e) for e in _extensions(resource, INTERACTION_URL)]
    interactions = (
        _interactions(asked, "Subscription.extension(subscription-supported-interaction)")
        if asked
        else DEFAULT_INTERACTIONS
    )
    return SubscriptionSpec(
        **common, criteria=criterion, fhirpath=fhirpath, interactions=interactions
    )
