"""Explanations: every subscription, fires or why not."""

from __future__ import annotations

from fhirbots.schemas.events import CausationLink
from fhirbots.subscriptions.config import build_config
from fhirbots.subscriptions.explain import explain, to_parameters
from tests.subscriptions.test_evaluation import event, first, subscription


def test_each_subscription_explained() -> None:
    obs = first("Observation")
    code = obs["code"]["coding"][0]["code"]
    resources = [
        subscription(f"Observation?code={code}", "a"),
        subscription("Observation?code=0000-0", "b"),
        subscription("Observation", "c", status="off"),
        subscription("Patient", "d"),
        {**subscription("Observation", "e"), "criteria": "Observation?bogus=1"},
    ]
    results = {e.subscription: e for e in explain(build_config("p1", 1, resources), event(obs))}
    assert results["Subscription/a"].fires
    b = results["Subscription/b"]
    assert not b.fires and b.failed is not None and "code" in b.failed
    assert code in " ".join(b.values)
    assert results["Subscription/c"].failed == "Subscription.status"
    assert results["Subscription/c"].values == ("off",)
    assert not results["Subscription/d"].fires
    e = results["Subscription/e"]
    assert e.status == "invalid" and e.error is not None and "bogus" in e.error


def test_loop_guard_is_explained() -> None:
    obs = first("Observation")
    sub = subscription("Observation", "a", channel={"type": "rest-hook", "endpoint": "Bot/x"})
    links = tuple(CausationLink(bot="Bot/x", execution=str(i)) for i in range(6))
    (result,) = explain(build_config("p1", 1, [sub]), event(obs, causation=links))
    assert not result.fires and result.failed is not None and "loop guard" in result.failed


def test_parameters_rendering() -> None:
    obs = first("Observation")
    config = build_config("p1", 1, [subscription("Observation?code=0000-0", "b")])
    rendered = to_parameters(explain(config, event(obs)))
    assert rendered["resourceType"] == "Parameters"
    (result,) = rendered["parameter"]
    names = [p["name"] for p in result["part"]]
    assert names[:3] == ["subscription", "status", "fires"]
    assert "failed" in names and "value" in names
