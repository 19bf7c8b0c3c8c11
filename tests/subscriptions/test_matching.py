"""The matcher: notifications, deterministic ids, the loop guard, failures kept apart."""

from __future__ import annotations

from fhirbots.schemas.events import CausationLink
from fhirbots.subscriptions.config import build_config
from fhirbots.subscriptions.loop_guard import LoopGuardPolicy
from fhirbots.subscriptions.matching import match_event, notification_id
from tests.subscriptions.test_evaluation import (
    FHIRPATH_URL,
    event,
    first,
    subscription,
)

BROKEN = "iif(status = 'final', status.foo(), false)"
"""Fails at run time (unknown function) only on final resources."""


def chain(*bots: str) -> tuple[CausationLink, ...]:
    return tuple(CausationLink(bot=b, execution=f"x{i}") for i, b in enumerate(bots))


def test_notification_carries_the_facts() -> None:
    obs = first("Observation")
    config = build_config("p1", 3, [subscription("Observation", "s1")])
    change = event(obs, traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01")
    (note,) = match_event(config, change).notifications
    assert note.subscription_id == "s1"
    assert note.subscription_version == "1"
    assert (note.resource_type, note.resource_id, note.interaction) == (
        "Observation",
        obs["id"],
        "create",
    )
    assert note.resource == obs
    assert note.event_id == change.event_id
    assert note.traceparent == change.traceparent
    assert note.channel.endpoint == "http://127.0.0.1:9/hook"
    assert note.key == "p1/s1"
    assert any("Observation" in m for m in note.matched)


def test_notification_id_is_deterministic() -> None:
    obs = first("Observation")
    config = build_config("p1", 1, [subscription("Observation", "s1")])
    change = event(obs)
    a = match_event(config, change).notifications[0].notification_id
    b = match_event(config, change).notifications[0].notification_id
    assert a == b == notification_id("p1", "s1", change.event_id)
    assert a != match_event(config, event(obs)).notifications[0].notification_id


def test_delete_notification_carries_the_deleted_version() -> None:
    obs = first("Observation")
    ext = [
        {
            "url": "https://medplum.com/fhir/StructureDefinition/subscription-supported-interaction",
            "valueCode": "delete",
        }
    ]
    config = build_config("p1", 1, [subscription("Observation", "s1", extension=ext)])
    (note,) = match_event(config, event(None, "delete", previous=obs)).notifications
    assert note.interaction == "delete" and note.resource == obs


def test_loop_guard_suppresses_beyond_depth() -> None:
    obs = first("Observation")
    bot_sub = subscription("Observation", "s1", channel={"type": "rest-hook", "endpoint": "Bot/b1"})
    other = subscription("Observation", "s2")
    config = build_config("p1", 1, [bot_sub, other])
    policy = LoopGuardPolicy(max_depth=2)
    ok = match_event(config, event(obs, causation=chain("Bot/b1", "Bot/b9", "Bot/b1")), policy)
    assert {n.subscription_id for n in ok.notifications} == {"s1", "s2"}
    deep = event(obs, causation=chain("Bot/b1", "Bot/b9", "Bot/b1", "Bot/b1"))
    outcome = match_event(config, deep, policy)
    assert [n.subscription_id for n in outcome.notifications] == ["s2"]
    (suppressed,) = outcome.suppressed
    assert suppressed.bot == "Bot/b1"
    assert suppressed.occurrences == 3 and suppressed.max_depth == 2
    assert [link.bot for link in suppressed.causation] == ["Bot/b1", "Bot/b9", "Bot/b1", "Bot/b1"]
    assert suppressed.notification_id == notification_id("p1", "s1", deep.event_id)


def test_default_depth_is_five() -> None:
    obs = first("Observation")
    sub = subscription("Observation", "s1", channel={"type": "rest-hook", "endpoint": "Bot/b1"})
    config = build_config("p1", 1, [sub])
    assert match_event(config, event(obs, causation=chain(*["Bot/b1"] * 5))).notifications
    assert match_event(config, event(obs, causation=chain(*["Bot/b1"] * 6))).suppressed


def test_a_failing_subscription_does_not_stop_the_others() -> None:
    obs = first("Observation", status="final")
    broken = subscription(
        "Observation",
        "s1",
        extension=[
            {"url": FHIRPATH_URL, "valueString": "iif(status = 'final', status.foo(), false)"}
        ],
    )
    config = build_config("p1", 1, [broken, subscription("Observation", "s2")])
    outcome = match_event(config, event(obs))
    assert [n.subscription_id for n in outcome.notifications] == ["s2"]
    (failure,) = outcome.failures
    assert failure.subscription_id == "s1" and "foo" in failure.message
