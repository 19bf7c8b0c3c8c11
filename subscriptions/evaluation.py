"""Does one subscription fire for one change? The verdict, and why not.

:func:`evaluate` is the single definition of "fires", shared by the matcher (fast path, no
explanation) and ``$explain`` (``explain=True`` names the failing criterion and the values the
resource had for it). Evaluation failures are values: a FHIRPath that raises yields a verdict
with ``error`` set, never an exception, so one broken subscription cannot stop the others.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhirbots.schemas.events import ChangeEvent
from fhirbots.subscriptions.errors import SubscriptionError
from fhirbots.subscriptions.fhirpath import evaluate_fhirpath
from fhirbots.subscriptions.model import Criterion, SubscriptionSpec, Topic, TopicTrigger
from fhirbots.subscriptions.search import matches
from fhirbots.subscriptions.search.matcher import clause_matches

__all__ = ["MAX_VALUE_CHARS", "Verdict", "evaluate", "subject_of"]

MAX_VALUE_CHARS = 300
"""Longest rendering of one value in an explanation; a whole narrative would drown the point."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a subscription fires for a change.

    Attributes:
        fires: It fires.
        matched: The criteria that held, in words.
        failed: The criterion that did not hold (its element and text), when it does not fire.
        values: The resource's values for the failed criterion (with ``explain`` only).
        error: A runtime failure (FHIRPath error): the subscription is broken.
    """

    fires: bool
    matched: tuple[str, ...] = ()
    failed: str | None = None
    values: tuple[str, ...] = ()
    error: str | None = None


def subject_of(event: ChangeEvent) -> dict[str, Any] | None:
    """The version criteria look at: the new one, or the previous one on delete."""
    return event.previous if event.interaction == "delete" else event.resource


def _render(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"


def _search(
    criterion: Criterion, resource: dict[str, Any] | None, explain: bool
) -> tuple[bool, str | None, tuple[str, ...]]:
    """(holds, failed clause, values) of a search criterion on one resource."""
    label = f"{criterion.expression}: {criterion.text}"
    if resource is None:
        return False, f"{label} (no resource version to test)", ()
    if matches(criterion.query, resource):
        return True, None, ()
    if not explain:
        return False, label, ()
    if resource.get("resourceType") != criterion.query.resource_type:
        return False, f"{label} (type)", (str(resource.get("resourceType")),)
    for clause in criterion.query.clauses:
        if not clause_matches(clause, resource):
            extract = getattr(clause, "extract", None)
            selected = extract(resource) if extract is not None else []
            return False, f"{label} (parameter {clause.name})", tuple(map(_render, selected))
    return False, label, ()


def _fhirpath(
    expression: str, where: str, event: ChangeEvent
) -> tuple[bool, str | None, tuple[str, ...]]:
    result = evaluate_fhirpath(expression, event.resource, event.previous)
    if result and result[0] is True:
        return True, None, ()
    return False, f"{where}: {expression}", tuple(map(_render, result))


def _criteria_verdict(spec: SubscriptionSpec, event: ChangeEvent, explain: bool) -> Verdict:
    criterion = spec.criteria
    assert criterion is not None
    if event.resource_type != criterion.resource_type:
        return Verdict(False, failed=f"Subscription.criteria: {criterion.text} (type)")
    if event.interaction not in spec.interactions:
        return Verdict(
            False,
            failed="interaction",
            values=(event.interaction, "fires on: " + ", ".join(sorted(spec.interactions))),
        )
    ok, failed, values = _search(criterion, subject_of(event), explain)
    if not ok:
        return Verdict(False, failed=failed, values=values)
    matched = [f"{criterion.expression}: {criterion.text}", f"interaction {event.interaction}"]
    if spec.fhirpath is not None:
        ok, failed, values = _fhirpath(spec.fhirpath, "FHIRPath criteria", event)
        if not ok:
            return Verdict(False, failed=failed, values=values)
        matched.append(f"FHIRPath criteria: {spec.fhirpath}")
    return Verdict(True, matched=tuple(matched))


def _trigger_check(
    trigger: TopicTrigger, event: ChangeEvent, explain: bool
) -> tuple[bool, str | None, tuple[str, ...]]:
    where = f"resourceTrigger[{trigger.index}]"
    if event.interaction not in trigger.interactions:
        return False, f"{where}.supportedInteraction", (event.interaction,)
    results: list[tuple[bool, str | None, tuple[str, ...]]] = []
    if trigger.previous is not None:
        if event.previous is None:
            results.append((trigger.result_for_create, f"{where} resultForCreate", ()))
        else:
            results.append(_search(trigger.previous, event.previous, explain))
    if trigger.current is not None:
        if event.interaction == "delete" or event.resource is None:
            results.append((trigger.result_for_delete, f"{where} resultForDelete", ()))
        else:
            results.append(_search(trigger.current, event.resource, explain))
    if results:
        passed = [r[0] for r in results]
        ok = all(passed) if trigger.require_both else any(passed)
        if not ok:
            return next(r for r in results if not r[0])
    if trigger.fhirpath is not None:
        return _fhirpath(trigger.fhirpath, f"{where}.fhirPathCriteria", event)
    return True, None, ()


def _topic_verdict(
    spec: SubscriptionSpec, topic: Topic | None, event: ChangeEvent, explain: bool
) -> Verdict:
    if topic is None:
        return Verdict(False, failed=f"Subscription.criteria: unknown topic {spec.topic_url}")
    if topic.status == "retired":
        return Verdict(False, failed=f"SubscriptionTopic {topic.url} is retired")
    first_failure: Verdict | None = None
    for trigger in topic.triggers:
        if trigger.resource_type != event.resource_type:
            continue
        ok, failed, values = _trigger_check(trigger, event, explain)
        if not ok:
            first_failure = first_failure or Verdict(
                False, failed=f"SubscriptionTopic {topic.url} {failed}", values=values
            )
            continue
        subject = subject_of(event)
        for criterion in spec.filters:
            if criterion.resource_type != event.resource_type:
                continue
            ok, failed, values = _search(criterion, subject, explain)
            if not ok:
                return Verdict(False, failed=failed, values=values)
        matched = (
            f"topic {topic.url} resourceTrigger[{trigger.index}]",
            f"interaction {event.interaction}",
            *(f"filter {c.text}" for c in spec.filters if c.resource_type == event.resource_type),
        )
        return Verdict(True, matched=matched)
    return first_failure or Verdict(
        False, failed=f"SubscriptionTopic {topic.url} has no trigger for {event.resource_type}"
    )


def evaluate(
    spec: SubscriptionSpec,
    event: ChangeEvent,
    topics: Mapping[str, Topic],
    *,
    explain: bool = False,
) -> Verdict:
    """Whether ``spec`` fires for ``event``.

    Args:
        spec: The parsed subscription (any status; only ``active`` fires).
        event: The change.
        topics: The project's topics by canonical URL.
        explain: Also find the failing clause and the resource's values for it (slower).

    Returns:
        The verdict; runtime errors are in ``Verdict.error``.
    """
    if not spec.fires:
        return Verdict(False, failed="Subscription.status", values=(spec.status,))
    if spec.end is not None and event.time >= spec.end:
        return Verdict(False, failed="Subscription.end", values=(spec.end.isoformat(),))
    if spec.since is not None and event.time < spec.since:
        return Verdict(
            False, failed="Subscription.meta.lastUpdated", values=(spec.since.isoformat(),)
        )
    try:
        if spec.topic_url is not None:
            return _topic_verdict(spec, topics.get(spec.topic_url), event, explain)
        return _criteria_verdict(spec, event, explain)
    except SubscriptionError as exc:
        return Verdict(False, failed="evaluation", error=exc.message)
