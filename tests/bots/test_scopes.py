"""Access-scope checks of bot FHIR calls."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbots.bots.errors import AccessDeniedError, FhirGatewayError
from fhirbots.bots.scopes import check_call, required_permissions
from fhirbots.bots.testing import make_bot

READER = make_bot(
    "def handler(f, e):\n    pass\n",
    access=[
        {"resourceType": "Patient", "interaction": ["read", "search"]},
        {"resourceType": "Flag", "interaction": ["create"]},
    ],
)


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("read", {"resource_type": "Patient", "resource_id": "1"}, [("Patient", "read")]),
        ("search", {"resource_type": "Patient", "params": {}}, [("Patient", "search")]),
        ("create", {"resource": {"resourceType": "Flag"}}, [("Flag", "create")]),
        ("update", {"resource": {"resourceType": "Flag", "id": "1"}}, [("Flag", "update")]),
        ("patch", {"resource_type": "Task", "resource_id": "1"}, [("Task", "patch")]),
        ("delete", {"resource_type": "Task", "resource_id": "1"}, [("Task", "delete")]),
        (
            "transaction",
            {
                "bundle": {
                    "type": "batch",
                    "entry": [
                        {"request": {"method": "GET", "url": "Patient/1"}},
                        {"request": {"method": "GET", "url": "Patient?name=x"}},
                        {"request": {"method": "POST", "url": "Flag"}},
                        {"request": {"method": "PUT", "url": "Task/2"}},
                        {"request": {"method": "DELETE", "url": "Task/3"}},
                    ],
                }
            },
            [
                ("Patient", "read"),
                ("Patient", "search"),
                ("Flag", "create"),
                ("Task", "update"),
                ("Task", "delete"),
            ],
        ),
    ],
)
def test_required_permissions(method: str, args: dict[str, Any], expected: list[Any]) -> None:
    assert required_permissions(method, args) == expected


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("read", {"resource_type": ""}),
        ("create", {"resource": "Patient"}),
        ("create", {"resource": {}}),
        ("transaction", {"bundle": {"type": "collection"}}),
        ("transaction", {"bundle": {"type": "batch", "entry": [{"request": {"url": "Patient"}}]}}),
        ("transaction", {"bundle": {"type": "batch", "entry": [{}]}}),
        ("eval", {}),
    ],
)
def test_malformed_calls_are_refused(method: str, args: dict[str, Any]) -> None:
    with pytest.raises(FhirGatewayError) as refused:
        required_permissions(method, args)
    assert refused.value.status == 400
    assert refused.value.outcome["resourceType"] == "OperationOutcome"


def test_scopes_allow_and_deny() -> None:
    check_call(READER, "read", {"resource_type": "Patient", "resource_id": "1"})
    check_call(READER, "create", {"resource": {"resourceType": "Flag"}})
    with pytest.raises(AccessDeniedError, match="may not update Flag") as denied:
        check_call(READER, "update", {"resource": {"resourceType": "Flag", "id": "1"}})
    assert denied.value.status == 403
    bundle = {
        "type": "transaction",
        "entry": [
            {"request": {"method": "POST", "url": "Flag"}},
            {"request": {"method": "DELETE", "url": "Patient/1"}},
        ],
    }
    with pytest.raises(AccessDeniedError, match="may not delete Patient"):
        check_call(READER, "transaction", {"bundle": bundle})


def test_no_scopes_means_whole_project_and_empty_means_nothing() -> None:
    anything = make_bot("def handler(f, e):\n    pass\n")
    check_call(anything, "delete", {"resource_type": "Patient", "resource_id": "1"})
    nothing = make_bot("def handler(f, e):\n    pass\n", access=[])
    with pytest.raises(AccessDeniedError):
        check_call(nothing, "read", {"resource_type": "Patient", "resource_id": "1"})
    wildcard = make_bot(
        "def handler(f, e):\n    pass\n", access=[{"resourceType": "*", "interaction": ["read"]}]
    )
    check_call(wildcard, "read", {"resource_type": "Observation", "resource_id": "1"})
