"""The worker's report of an exception a bot raised."""

from __future__ import annotations

from fhirbots.bots._sandbox import BotFhirError
from fhirbots.bots._worker import _format_exception


def test_a_failed_fhir_call_is_reported_by_the_name_bots_know() -> None:
    assert _format_exception(BotFhirError("Patient/1 not found", 404, {}), []) == (
        "FhirError: Patient/1 not found"
    )


def test_other_exceptions_keep_their_own_names() -> None:
    class NotMine(BotFhirError):
        pass

    assert _format_exception(NotMine("x", 400, {}), []) == "NotMine: x"
    assert _format_exception(KeyError("k"), []) == "KeyError: 'k'"
