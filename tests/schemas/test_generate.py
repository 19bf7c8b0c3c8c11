from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fhirbots.schemas import topics
from fhirbots.schemas.events import CausationLink, ChangeEvent
from fhirbots.schemas.generate import JSON_DIR, PAYLOADS, main, render, schema_for
from fhirbots.schemas.validation import R4B_RESOURCE_TYPES, RESOURCE_TYPES_FILE, r4b_model_types


def test_checked_in_schemas_are_up_to_date() -> None:
    expected = render()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in JSON_DIR.glob("*.schema.json")}
    assert set(on_disk) == set(expected), "run `python -m fhirbots.schemas.generate`"
    for name, content in expected.items():
        assert on_disk[name] == content, (
            f"{name} is outdated: run `python -m fhirbots.schemas.generate`"
        )


def test_every_topic_has_a_versioned_payload_schema() -> None:
    declared = {
        getattr(topics, name)
        for name in topics.__all__
        if isinstance(getattr(topics, name), str) and name != "DEADLETTER_SUFFIX"
    }
    assert declared == set(PAYLOADS), (
        "add the topic's payload model to fhirbots.schemas.generate.PAYLOADS"
    )
    for topic in PAYLOADS:
        assert re.fullmatch(r"[a-z.]+\.v\d+", topic), topic


def test_change_event_schema_describes_its_json() -> None:
    schema = schema_for(topics.CHANGES, ChangeEvent)
    assert schema["$id"] == "fhir.changes.v1.schema.json"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {
        "event_id",
        "project",
        "interaction",
        "resource_type",
        "resource_id",
        "version_id",
        "time",
    }
    assert schema["properties"]["interaction"]["enum"] == ["create", "update", "delete"]
    event = ChangeEvent(
        event_id="e1",
        project="p",
        interaction="update",
        resource_type="Patient",
        resource_id="1",
        version_id="2",
        resource={"resourceType": "Patient", "id": "1"},
        previous={"resourceType": "Patient", "id": "1"},
        time=datetime.now(UTC),
        causation=(CausationLink(bot="Bot/b", execution="x"),),
    )
    wire = json.loads(event.model_dump_json())
    assert set(wire) <= set(schema["properties"])
    assert set(schema["required"]) <= set(wire)
    assert schema["properties"]["time"]["format"] == "date-time"


def test_check_mode_reports_and_write_mode_repairs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "fhir.changes.v1.schema.json").write_text("{}\n")
    (tmp_path / "old.topic.v0.schema.json").write_text("{}\n")
    assert main(["--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "outdated fhir.changes.v1.schema.json" in err
    assert "stale old.topic.v0.schema.json" in err
    assert "missing fhir.notifications.v1.schema.json" in err
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0
    assert not (tmp_path / "old.topic.v0.schema.json").exists()


def test_checked_in_resource_types_are_the_installed_models() -> None:
    on_disk = json.loads(RESOURCE_TYPES_FILE.read_text(encoding="utf-8"))
    assert on_disk == r4b_model_types(), (
        "run `python -m fhirbots.schemas.generate --resource-types`"
    )
    assert {"Patient", "Observation", "SubscriptionTopic", "Bundle"} <= R4B_RESOURCE_TYPES
    assert "HumanName" not in R4B_RESOURCE_TYPES  # a data type, not a resource
