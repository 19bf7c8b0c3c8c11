"""Subscriptions through the HTTP API and the CLI: 422 on what cannot be evaluated,
``$explain``, immediate effect, ``subscription apply|explain`` and ``match``."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog

from fhirbots.engine.cli.subscriptions import add_commands, match_stream
from fhirbots.schemas.notifications import Notification
from fhirbots.schemas.topics import NOTIFICATIONS
from tests.engine.conftest import Api
from tests.waiting import eventually

BASE = "/fhir/R4"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TOPIC_URL = "http://example.org/topics/encounter-finished"


def subscription(criteria: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "test",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"},
        **fields,
    }


def encounter_topic() -> dict[str, Any]:
    return {
        "resourceType": "SubscriptionTopic",
        "url": TOPIC_URL,
        "identifier": [{"system": "http://example.org/ids", "value": "enc-finished"}],
        "status": "active",
        "resourceTrigger": [
            {
                "resource": "Encounter",
                "supportedInteraction": ["create", "update"],
                "queryCriteria": {
                    "previous": "Encounter?status:not=finished",
                    "resultForCreate": "test-passes",
                    "current": "Encounter?status=finished",
                    "requireBoth": True,
                },
            }
        ],
        "canFilterBy": [{"resource": "Encounter", "filterParameter": "patient"}],
    }


async def send(api: Api, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await api.client.request(
        method,
        f"{BASE}/{path}",
        data=orjson.dumps(body) if body is not None else None,
        headers=api.headers(),
    )
    raw = await resp.read()
    return resp.status, (orjson.loads(raw) if raw else None)


@pytest.mark.parametrize(
    ("criteria", "named"),
    [
        ("Observation?foo=1", "foo"),
        ("Observation?code:below=123", "below"),
        ("Observation?date=xx2020", "date"),
        ("Observation?subject.name=x", "subject.name"),
        ("http://example.org/topics/unknown", "unknown SubscriptionTopic"),
    ],
)
async def test_unevaluable_criteria_refused_with_422(api: Api, criteria: str, named: str) -> None:
    status, body = await send(api, "POST", "Subscription", subscription(criteria))
    assert status == 422
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert named in issue["diagnostics"]
    assert issue["expression"] == ["Subscription.criteria"]


async def test_bad_fhirpath_and_bad_topic_refused(api: Api) -> None:
    bad_path = subscription(
        "Observation",
        extension=[
            {
                "url": "https://medplum.com/fhir/StructureDefinition/fhir-path-criteria-expression",
                "valueString": "status = ",
            }
        ],
    )
    status, body = await send(api, "POST", "Subscription", bad_path)
    assert status == 422 and "FHIRPath" in body["issue"][0]["diagnostics"]
    topic = encounter_topic()
    topic["resourceTrigger"][0]["queryCriteria"]["current"] = "Encounter?nope=1"
    status, body = await send(api, "POST", "SubscriptionTopic", topic)
    assert status == 422
    assert body["issue"][0]["expression"] == [
        "SubscriptionTopic.resourceTrigger[0].queryCriteria.current"
    ]


async def test_topic_subscription_accepted_once_the_topic_exists(api: Api) -> None:
    filt = {
        "extension": [
            {
                "url": BACKPORT + "backport-filter-criteria",
                "valueString": "Encounter?patient=Patient/1",
            }
        ]
    }
    sub = subscription(TOPIC_URL, _criteria=filt)
    assert (await send(api, "POST", "Subscription", sub))[0] == 422
    assert (await send(api, "POST", "SubscriptionTopic", encounter_topic()))[0] == 201
    assert (await send(api, "POST", "Subscription", sub))[0] == 201
    bad = {
        "extension": [
            {"url": BACKPORT + "backport-filter-criteria", "valueString": "Encounter?status=x"}
        ]
    }
    status, body = await send(api, "POST", "Subscription", subscription(TOPIC_URL, _criteria=bad))
    assert status == 422 and "canFilterBy" in body["issue"][0]["diagnostics"]


def _results(parameters: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    out: dict[str, dict[str, list[Any]]] = {}
    for result in parameters["parameter"]:
        parts: dict[str, list[Any]] = {}
        for part in result["part"]:
            value = next(v for k, v in part.items() if k.startswith("value"))
            parts.setdefault(part["name"], []).append(value)
        out[parts["subscription"][0]["reference"]] = parts
    return out


async def test_explain(api: Api) -> None:
    _, a = await send(api, "POST", "Subscription", subscription("Observation?code=8867-4"))
    _, b = await send(api, "POST", "Subscription", subscription("Observation?code=1234-5"))
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    }
    status, body = await send(api, "POST", "Subscription/$explain", obs)
    assert status == 200 and body["resourceType"] == "Parameters"
    results = _results(body)
    assert results[f"Subscription/{a['id']}"]["fires"] == [True]
    why = results[f"Subscription/{b['id']}"]
    assert why["fires"] == [False]
    assert "code" in why["failed"][0]
    assert any("8867-4" in v for v in why["value"])
    deleted = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "previous", "resource": obs},
            {"name": "interaction", "valueCode": "delete"},
        ],
    }
    status, body = await send(api, "POST", "Subscription/$explain", deleted)
    assert status == 200
    assert _results(body)[f"Subscription/{a['id']}"]["failed"] == ["interaction"]


async def _wait_notes(
    api: Api, predicate: Callable[[list[Notification]], bool]
) -> list[Notification]:
    log = api.engine.event_log
    assert log is not None

    async def notes() -> list[Notification] | None:
        found: list[Notification] = []
        for partition in range(await log.partitions(NOTIFICATIONS)):
            for record in await log.read(NOTIFICATIONS, partition, offset=0, limit=1000):
                found.append(Notification.model_validate_json(record.value))
        return found if predicate(found) else None

    return await eventually(notes, "the expected notifications")


async def test_immediate_effect_over_http(api: Api) -> None:
    await api.engine.start_relay()
    await api.engine.start_matcher()
    assert (await send(api, "POST", "SubscriptionTopic", encounter_topic()))[0] == 201
    _, sub = await send(api, "POST", "Subscription", subscription(TOPIC_URL))
    encounter = {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "AMB"}}
    _, enc = await send(api, "POST", "Encounter", encounter)
    finished = {**enc, "status": "finished"}
    await send(api, "PUT", f"Encounter/{enc['id']}", finished)
    notes = await _wait_notes(api, lambda n: len(n) >= 1)
    (note,) = notes
    assert note.subscription_id == sub["id"] and note.interaction == "update"
    assert note.topic == TOPIC_URL


async def _cli(*argv: str) -> int:
    """Run a command in this process; the engine serving it logs here too, and its lines
    are captured apart, so that stdout holds only the command's output."""
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    with structlog.testing.capture_logs():
        result: int = await args.run(args)
    return result


async def test_cli_apply_creates_changes_and_refuses(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FHIRBOTS_TOKEN", api.token)
    url = str(api.client.make_url(BASE))
    ident = "https://fhirbots.dev/fhir/StructureDefinition/subscription-identifier"
    sub = subscription(
        TOPIC_URL,
        extension=[{"url": ident, "valueIdentifier": {"system": "urn:x", "value": "s1"}}],
    )
    (tmp_path / "a-sub.json").write_text(json.dumps(sub))
    (tmp_path / "b-topic.json").write_text(json.dumps(encounter_topic()))
    assert await _cli("subscription", "apply", str(tmp_path), "--url", url) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("created SubscriptionTopic/") and out[1].startswith(
        "created Subscription/"
    )
    assert await _cli("subscription", "apply", str(tmp_path), "--url", url) == 0
    assert all(line.startswith("unchanged") for line in capsys.readouterr().out.splitlines())
    (tmp_path / "a-sub.json").write_text(json.dumps({**sub, "status": "off"}))
    assert await _cli("subscription", "apply", str(tmp_path), "--url", url) == 0
    assert "changed Subscription/" in capsys.readouterr().out
    bad = {
        **sub,
        "criteria": "Observation?nope=1",
        "extension": [{"url": ident, "valueIdentifier": {"value": "s2"}}],
    }
    (tmp_path / "c-bad.json").write_text(json.dumps(bad))
    assert await _cli("subscription", "apply", str(tmp_path), "--url", url) == 1
    assert "refused Subscription/" in capsys.readouterr().out


async def test_cli_explain(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FHIRBOTS_TOKEN", api.token)
    url = str(api.client.make_url(BASE))
    _, a = await send(api, "POST", "Subscription", subscription("Patient?gender=female"))
    file = tmp_path / "patient.json"
    file.write_text(json.dumps({"resourceType": "Patient", "gender": "male"}))
    assert await _cli("subscription", "explain", str(file), "--url", url) == 0
    out = capsys.readouterr().out
    assert f"Subscription/{a['id']} (active): does not fire" in out and "male" in out


def test_match_command_jsonl() -> None:
    lines = [
        {
            "criteria": "Patient?gender=male",
            "resource": {"resourceType": "Patient", "gender": "male"},
        },
        {
            "criteria": "Patient?gender=male",
            "resource": {"resourceType": "Patient", "gender": "female"},
        },
        {"criteria": "Patient?nope=1", "resource": {"resourceType": "Patient"}},
        {
            "fhirpath": "%previous.active = false and %current.active = true",
            "resource": {"resourceType": "Patient", "active": True},
            "previous": {"resourceType": "Patient", "active": False},
        },
        {
            "fhirpath": "%previous.id.empty()",
            "resource": {"resourceType": "Patient"},
            "previous": None,
        },
        {"fhirpath": "a b", "resource": {"resourceType": "Patient"}},
    ]
    source = io.StringIO("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    sink = io.StringIO()
    failed = match_stream(source, sink)
    out = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert out[0] == {"match": True} and out[1] == {"match": False}
    assert "nope" in out[2]["error"]
    assert out[3] == {"match": True} and out[4] == {"match": True}
    assert "error" in out[5] and "error" in out[6]
    assert failed == 3 and len(out) == 7
