"""The index narrows without losing matches: same result as trying every subscription."""

from __future__ import annotations

import random
from typing import Any

from fhirbots.schemas.events import ChangeEvent
from fhirbots.subscriptions.config import build_config
from fhirbots.subscriptions.evaluation import evaluate
from fhirbots.subscriptions.matching import match_event
from fhirbots.subscriptions.search import default_registry
from tests.subscriptions.test_evaluation import (
    FHIRPATH_URL,
    INTERACTION_URL,
    event,
    subscription,
    synthea,
)

REGISTRY = default_registry()


def _criteria_for(resource: dict[str, Any], rng: random.Random) -> str:
    """A criterion made from a real resource's values (so some match, most do not)."""
    rtype = resource["resourceType"]
    choices: list[str] = [f"{rtype}?_id={resource['id']}", rtype]
    coding = ((resource.get("code") or {}).get("coding") or [{}])[0]
    if coding.get("code") and REGISTRY.get(rtype, "code") is not None:
        choices.append(f"{rtype}?code={coding.get('system', '')}|{coding['code']}")
        choices.append(f"{rtype}?code={coding['code']},other-code")
        choices.append(f"{rtype}?code:not={coding['code']}")
    subject = (resource.get("subject") or resource.get("patient") or {}).get("reference")
    if subject and REGISTRY.get(rtype, "patient") and REGISTRY.get(rtype, "subject"):
        choices.append(f"{rtype}?patient={subject}")
        if REGISTRY.get(rtype, "status") is not None:
            choices.append(f"{rtype}?subject={subject}&status={resource.get('status', 'x')}")
    if resource.get("status") and REGISTRY.get(rtype, "status") is not None:
        choices.append(f"{rtype}?status={resource['status']}")
    return rng.choice(choices)


def _subscriptions(count: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    resources = [r for r in synthea() if r["resourceType"] not in ("Claim", "Bundle")]
    out = []
    for i in range(count):
        extension: list[dict[str, Any]] = []
        if rng.random() < 0.2:
            extension.append({"url": FHIRPATH_URL, "valueString": "%previous.id.exists()"})
        if rng.random() < 0.2:
            extension.append({"url": INTERACTION_URL, "valueCode": "delete"})
        fields: dict[str, Any] = {"extension": extension} if extension else {}
        out.append(subscription(_criteria_for(rng.choice(resources), rng), f"s{i:04d}", **fields))
    return out


def _events() -> list[ChangeEvent]:
    changes = []
    for i, resource in enumerate(synthea()):
        kind = i % 3
        if kind == 0:
            changes.append(event(resource))
        elif kind == 1:
            changes.append(event(resource, "update", previous=resource))
        else:
            changes.append(event(None, "delete", previous=resource))
    return changes


def test_index_equals_brute_force_on_synthea() -> None:
    config = build_config("p1", 1, _subscriptions(400))
    assert not config.problems
    assert config.index.size == 400
    fired_total = candidates_total = 0
    for change in _events():
        expected = {s.id for s in config.subscriptions if evaluate(s, change, config.topics).fires}
        got = {n.subscription_id for n in match_event(config, change).notifications}
        assert got == expected, change.resource_type
        candidates = config.index.candidates(change)
        assert expected <= {c.id for c in candidates}
        fired_total += len(got)
        candidates_total += len(candidates)
    assert fired_total > 50  # the mix really matches things
    # The index offers a small fraction of the 400 subscriptions per event.
    assert candidates_total / len(_events()) < 40


def test_inactive_subscriptions_are_not_indexed() -> None:
    resources = [
        subscription("Observation", "a"),
        subscription("Observation", "b", status="off"),
        subscription("Observation", "c", status="requested"),
    ]
    config = build_config("p1", 1, resources)
    obs = next(r for r in synthea() if r["resourceType"] == "Observation")
    assert [s.id for s in config.index.candidates(event(obs))] == ["a"]


def test_disable_removes_a_subscription_until_rebuilt() -> None:
    config = build_config(
        "p1", 1, [subscription("Observation", "a"), subscription("Observation", "b")]
    )
    obs = next(r for r in synthea() if r["resourceType"] == "Observation")
    config.index.disable("a")
    assert [s.id for s in config.index.candidates(event(obs))] == ["b"]
