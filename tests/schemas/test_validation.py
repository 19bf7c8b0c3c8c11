"""The validation facade: R4B types and the engine's custom types, known without set-up."""

from __future__ import annotations

from typing import Any, cast

import pytest

from fhirbots.schemas.bot import Bot
from fhirbots.schemas.validation import (
    CUSTOM_TYPES,
    ResourceInvalid,
    is_known_type,
    validate_resource,
)


def test_bot_is_known_and_validated_by_its_model_without_registration() -> None:
    assert CUSTOM_TYPES["Bot"] is Bot
    assert is_known_type("Bot") and is_known_type("Patient") and not is_known_type("Robot")
    validate_resource({"resourceType": "Bot", "name": "b", "code": "x = 1"}, expected_type="Bot")
    with pytest.raises(ResourceInvalid) as refused:
        validate_resource({"resourceType": "Bot", "code": "x = 1"})
    assert [p.path for p in refused.value.problems] == ["Bot.name"]


def test_custom_types_cannot_be_changed_at_run_time() -> None:
    writable = cast(dict[str, Any], CUSTOM_TYPES)  # what a caller trying to register would do
    with pytest.raises(TypeError):
        writable["Robot"] = Bot
