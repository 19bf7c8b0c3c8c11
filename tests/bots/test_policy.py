"""SandboxPolicy: defaults, copy-builders, validation and effective limits."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from fhirbots.bots.errors import BotError, PolicyError
from fhirbots.bots.policy import DEFAULT_ALLOWED_MODULES, MIB, SandboxPolicy


def test_defaults_are_the_documented_allow_list_and_limits() -> None:
    policy = SandboxPolicy()
    assert policy.allowed_modules == DEFAULT_ALLOWED_MODULES
    assert {"json", "datetime", "zoneinfo", "itertools"} <= policy.allowed_modules
    assert not {"os", "sys", "pickle", "subprocess"} & policy.allowed_modules
    assert policy.timeout_seconds == 10.0
    assert policy.memory_bytes == 512 * MIB


def test_policy_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        SandboxPolicy().timeout_seconds = 3  # type: ignore[misc]


def test_copy_builders_change_one_field() -> None:
    base = SandboxPolicy()
    assert base.with_timeout(3).timeout_seconds == 3
    assert base.with_cpu_seconds(2).cpu_seconds == 2
    assert base.with_memory(128 * MIB).memory_bytes == 128 * MIB
    assert "csv" in base.with_modules("csv").allowed_modules
    assert "json" not in base.without_modules("json").allowed_modules
    assert base.with_output_limit(10).max_output_bytes == 10
    assert base.with_log_limit(10).max_log_bytes == 10
    assert base.with_pool_size(4).pool_size == 4
    assert base == SandboxPolicy()


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"pool_size": -1}, "pool_size"),
        ({"memory_bytes": 10 * MIB}, "memory_bytes"),
        ({"allowed_modules": frozenset({"os.path"})}, "allowed_modules"),
        ({"allowed_modules": frozenset({"_thread"})}, "allowed_modules"),
        ({"max_fhir_calls": -1}, "max_fhir_calls"),
        ({"max_message_bytes": 1024 * 1024}, "max_message_bytes"),
    ],
)
def test_impossible_values_are_refused_naming_the_field(
    changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(PolicyError, match=named) as refused:
        SandboxPolicy(**changes)
    assert isinstance(refused.value, BotError)
    assert isinstance(refused.value, ValueError)


def test_bot_settings_only_tighten_the_policy() -> None:
    policy = SandboxPolicy(timeout_seconds=10, cpu_seconds=10, memory_bytes=512 * MIB)
    assert policy.limits_for().timeout_seconds == 10
    tighter = policy.limits_for(timeout_seconds=2, memory_bytes=128 * MIB)
    assert tighter.timeout_seconds == 2
    assert tighter.cpu_seconds == 3
    assert tighter.memory_bytes == 128 * MIB
    looser = policy.limits_for(timeout_seconds=60, memory_bytes=4096 * MIB)
    assert looser.timeout_seconds == 10
    assert looser.memory_bytes == 512 * MIB
