"""The Bot resource model."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fhirbots.schemas.bot import Bot

FULL: dict[str, Any] = {
    "resourceType": "Bot",
    "id": "flag-critical-potassium",
    "identifier": [{"system": "urn:bots", "value": "k-flag"}],
    "name": "Flag critical potassium",
    "description": "Writes a Flag and a Task for critical potassium results.",
    "status": "active",
    "code": "def handler(fhir, event):\n    return None\n",
    "runtimeVersion": "python-restricted",
    "timeout": 5,
    "memoryLimit": 128,
    "auditEventTrigger": "on-error",
    "cronString": "*/15 * * * 1-5",
    "runAs": "author",
    "executionRecording": "errors",
    "access": [
        {"resourceType": "Observation", "interaction": ["read", "search"]},
        {"resourceType": "*", "interaction": ["create"]},
    ],
    "secret": ["PAGER_TOKEN"],
}


def test_full_resource_round_trips() -> None:
    bot = Bot.from_resource(FULL)
    assert bot.reference == "Bot/flag-critical-potassium"
    assert bot.memory_limit_bytes == 128 * 1024 * 1024
    assert bot.run_as == "author"
    assert bot.to_resource() == {**FULL, "timeout": 5.0}


def test_scopes() -> None:
    bot = Bot.from_resource(FULL)
    assert bot.allows("Observation", "search")
    assert bot.allows("Flag", "create")
    assert not bot.allows("Observation", "delete")
    assert not bot.allows("Flag", "update")


def test_minimal_bot_defaults() -> None:
    bot = Bot.from_resource({"resourceType": "Bot", "name": "b", "code": "x"})
    assert (bot.status, bot.audit_event_trigger, bot.run_as) == ("active", "always", "bot")
    assert bot.execution_recording == "all"
    assert bot.access is None
    assert bot.allows("Anything", "delete")
    assert bot.reference == "Bot/unsaved"
    assert bot.memory_limit_bytes is None


@pytest.mark.parametrize(
    "change",
    [
        {"resourceType": "Patient"},
        {"runtimeVersion": "nodejs"},
        {"timeout": 0},
        {"timeout": 3600},
        {"memoryLimit": 8},
        {"auditEventTrigger": "sometimes"},
        {"cronString": "every minute"},
        {"cronString": "* * * *"},
        {"runAs": "root"},
        {"access": [{"resourceType": "patient", "interaction": ["read"]}]},
        {"access": [{"resourceType": "Patient", "interaction": []}]},
        {"access": [{"resourceType": "Patient", "interaction": ["execute"]}]},
        {"secret": ["has space"]},
        {"id": "bad id!"},
        {"name": ""},
        {"unknownField": 1},
    ],
)
def test_invalid_resources_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Bot.from_resource({**FULL, **change})


def test_bot_is_frozen() -> None:
    bot = Bot.from_resource(FULL)
    with pytest.raises(ValidationError):
        bot.name = "other"  # type: ignore[misc]
