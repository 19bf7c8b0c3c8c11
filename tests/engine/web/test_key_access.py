"""What each REST request needs of a key's scope, and the bot tags taken out of REST bodies."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbots.engine.automation.tags import BOT_TAG_SYSTEM, EXECUTION_TAG_SYSTEM
from fhirbots.engine.web.key_access import required, strip_bot_tags

BASE = "/fhir/R4"


@pytest.mark.parametrize(
    ("method", "path", "needs"),
    [
        ("GET", BASE, [("*", "search")]),
        ("GET", f"{BASE}/", [("*", "search")]),
        ("POST", f"{BASE}/_search", [("*", "search")]),
        ("GET", f"{BASE}/_history", [("*", "history")]),
        ("GET", f"{BASE}/metadata", []),
        ("GET", f"{BASE}/openapi.json", []),
        ("POST", f"{BASE}/$reindex", [("*", "operation")]),
        ("GET", f"{BASE}/$reindex/j1", [("*", "search")]),
        ("GET", f"{BASE}/Patient", [("Patient", "search")]),
        ("POST", f"{BASE}/Patient", [("Patient", "create")]),
        ("PUT", f"{BASE}/Patient", [("Patient", "update")]),
        ("PATCH", f"{BASE}/Patient", [("Patient", "patch")]),
        ("DELETE", f"{BASE}/Patient", [("Patient", "delete")]),
        ("POST", f"{BASE}/Patient/_search", [("Patient", "search")]),
        ("GET", f"{BASE}/Patient/_history", [("Patient", "history")]),
        ("GET", f"{BASE}/Patient/1", [("Patient", "read")]),
        ("PUT", f"{BASE}/Patient/1", [("Patient", "update")]),
        ("PATCH", f"{BASE}/Patient/1", [("Patient", "patch")]),
        ("DELETE", f"{BASE}/Patient/1", [("Patient", "delete")]),
        ("GET", f"{BASE}/Patient/1/_history", [("Patient", "history")]),
        ("GET", f"{BASE}/Patient/1/_history/2", [("Patient", "vread")]),
        ("GET", f"{BASE}/Patient/1/$everything", [("Patient", "search")]),
        ("POST", f"{BASE}/Patient/$validate", [("Patient", "operation")]),
        ("POST", f"{BASE}/Bot/b1/$execute", [("Bot", "operation")]),
    ],
)
def test_each_route_needs_its_interaction(method: str, path: str, needs: list[Any]) -> None:
    assert required(method, path, None) == needs


def test_a_bundle_needs_each_entry() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/1"}},
            {"request": {"method": "GET", "url": "Observation?code=x"}},
            {"request": {"method": "GET", "url": "/Flag/2/_history/1"}},
            {"request": {"method": "POST", "url": "Flag"}},
            {"request": {"method": "PUT", "url": "Condition?identifier=x"}},
            {"request": {"method": "DELETE", "url": "Encounter/3"}},
        ],
    }
    assert required("POST", BASE, bundle) == [
        ("Patient", "read"),
        ("Observation", "search"),
        ("Flag", "vread"),
        ("Flag", "create"),
        ("Condition", "update"),
        ("Encounter", "delete"),
    ]


def test_bot_tags_are_stripped_from_resources_and_entries() -> None:
    def tagged() -> dict[str, Any]:
        return {
            "resourceType": "Flag",
            "meta": {
                "tag": [
                    {"system": BOT_TAG_SYSTEM, "code": "Bot/1"},
                    {"system": EXECUTION_TAG_SYSTEM, "code": "e"},
                    {"system": "urn:x", "code": "kept"},
                ]
            },
        }

    resource = tagged()
    assert strip_bot_tags(resource)
    assert resource["meta"]["tag"] == [{"system": "urn:x", "code": "kept"}]
    assert not strip_bot_tags(resource)  # nothing left to strip
    only = {"resourceType": "Flag", "meta": {"tag": [{"system": BOT_TAG_SYSTEM, "code": "x"}]}}
    assert strip_bot_tags(only) and only["meta"] == {}
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "entry": [{"resource": tagged()}, {"resource": None}],
    }
    assert strip_bot_tags(bundle)
    assert bundle["entry"][0]["resource"]["meta"]["tag"] == [{"system": "urn:x", "code": "kept"}]
    assert not strip_bot_tags({"resourceType": "Flag", "meta": {"tag": "not a list"}})
