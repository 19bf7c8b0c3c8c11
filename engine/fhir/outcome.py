"""OperationOutcome: the one shape every error takes on the wire."""

from __future__ import annotations

from typing import Any

from fhirbots.engine.errors import FhirError, Issue

__all__ = ["operation_outcome", "outcome_for"]


def operation_outcome(issues: tuple[Issue, ...] | list[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource holding ``issues``."""
    rendered: list[dict[str, Any]] = []
    for issue in issues:
        item: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            item["expression"] = list(issue.expression)
        rendered.append(item)
    return {"resourceType": "OperationOutcome", "issue": rendered}


def outcome_for(error: FhirError) -> dict[str, Any]:
    """The OperationOutcome of an engine error."""
    return operation_outcome(error.issues)
