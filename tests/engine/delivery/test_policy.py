"""Delivery policy from Subscription extensions, back-off and success codes."""

from __future__ import annotations

import random

import pytest

from fhirbots.engine.delivery.policy import (
    AUDIT_URL,
    BACKPORT_HEARTBEAT_URL,
    BACKPORT_TIMEOUT_URL,
    MAX_ATTEMPTS_URLS,
    SECRET_URLS,
    SUCCESS_CODES_URLS,
    Backoff,
    DeliveryDefaults,
    SuccessCodes,
    policy_for,
)

DEFAULTS = DeliveryDefaults(timeout=7.0, max_attempts=5)


def test_defaults_without_extensions() -> None:
    policy = policy_for({"resourceType": "Subscription", "channel": {}}, DEFAULTS)
    assert policy.max_attempts == 5 and policy.timeout == 7.0
    assert 200 in policy.success and 299 in policy.success
    assert 300 not in policy.success and 404 not in policy.success
    assert policy.secret is None and policy.audit == "never"


def test_medplum_extensions_are_read() -> None:
    subscription = {
        "resourceType": "Subscription",
        "extension": [
            {"url": MAX_ATTEMPTS_URLS[0], "valueInteger": 3},
            {"url": SUCCESS_CODES_URLS[0], "valueString": "200-399,404"},
            {"url": SECRET_URLS[0], "valueString": "k"},
            {"url": AUDIT_URL, "valueCode": "on-failure"},
        ],
        "channel": {
            "header": ["Authorization: Bearer x"],
            "extension": [
                {"url": BACKPORT_TIMEOUT_URL, "valueUnsignedInt": 2},
                {"url": BACKPORT_HEARTBEAT_URL, "valueUnsignedInt": 60},
            ],
        },
    }
    policy = policy_for(subscription, DEFAULTS)
    assert policy.max_attempts == 3
    assert 302 in policy.success and 404 in policy.success and 500 not in policy.success
    assert policy.secret == "k" and policy.audit == "on-failure"
    assert policy.timeout == 2.0 and policy.heartbeat_period == 60.0
    assert policy.headers == ("Authorization: Bearer x",)


def test_bad_values_fall_back_and_attempts_are_capped() -> None:
    subscription = {
        "extension": [
            {"url": MAX_ATTEMPTS_URLS[0], "valueInteger": 10_000},
            {"url": SUCCESS_CODES_URLS[0], "valueString": "banana"},
            {"url": AUDIT_URL, "valueCode": "sometimes"},
        ]
    }
    policy = policy_for(subscription, DEFAULTS)
    assert policy.max_attempts == 30
    assert policy.success == SuccessCodes()
    assert policy.audit == "never"


@pytest.mark.parametrize("text", ["", "99", "600", "300-200", "x-y"])
def test_success_codes_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        SuccessCodes.parse(text)


def test_backoff_grows_is_capped_and_jittered() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, jitter=0.5)
    rng = random.Random(7)
    delays = [backoff.delay(n, rng) for n in range(1, 8)]
    bases = [1, 2, 4, 8, 10, 10, 10]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.5 <= delay <= base
    assert len({round(d, 6) for d in delays[4:]}) == 3  # jitter spreads capped delays
    assert Backoff(initial=1, maximum=10, jitter=0).delay(3) == 4.0
