"""FHIRPath criteria: compilation, strict syntax, %current/%previous."""

from __future__ import annotations

import pytest

from fhirbots.subscriptions.errors import CriteriaError, EvaluationError
from fhirbots.subscriptions.fhirpath import compile_fhirpath, evaluate_fhirpath, fhirpath_holds


@pytest.mark.parametrize("bad", ["a b c", "name.(", "(((", "status = ", "'unterminated", ""])
def test_syntax_errors_are_refused(bad: str) -> None:
    with pytest.raises(CriteriaError):
        compile_fhirpath(bad)


def test_compiled_once() -> None:
    assert compile_fhirpath("status = 'final'") is compile_fhirpath("status = 'final'")


def test_an_absent_version_is_empty() -> None:
    current = {"resourceType": "Patient", "active": True}
    assert not fhirpath_holds("%previous.exists()", current, None)  # a create
    assert fhirpath_holds("%previous.empty()", current, None)
    assert fhirpath_holds("%previous.exists()", current, current)  # an update
    assert not fhirpath_holds("%previous.empty()", current, current)
    assert fhirpath_holds("%current.empty()", None, current)  # a delete
    assert fhirpath_holds("%previous.active.empty()", current, None)
    assert fhirpath_holds("%current.active", current, None)
    assert not fhirpath_holds("%previous.active", current, None)
    assert fhirpath_holds("%current.active.empty()", None, current)  # a delete


def test_first_result_must_be_true() -> None:
    resource = {"resourceType": "Patient", "name": [{"given": ["a", "b"]}]}
    assert not fhirpath_holds("name.given", resource, None)  # strings, not true
    assert fhirpath_holds("name.given.count() = 2", resource, None)
    assert evaluate_fhirpath("name.given", resource, None) == ["a", "b"]


def test_runtime_failure() -> None:
    with pytest.raises(EvaluationError):
        evaluate_fhirpath("name.nope()", {"resourceType": "Patient", "name": [{}]}, None)
