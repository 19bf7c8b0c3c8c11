"""``fhirbots reindex`` against a served engine: a job over the SearchParameter's bases,
followed to its end."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from fhirbots.engine.cli.main import _parser
from fhirbots.engine.cli.reindex import job_fields
from tests.engine.conftest import Api
from tests.engine.operations.test_search_parameters import send, us_core

BASE = "/fhir/R4"


async def _run(*argv: str) -> int:
    args = _parser().parse_args(["reindex", *argv])
    with structlog.testing.capture_logs():
        result: int = await args.run(args)
    return result


async def test_reindex_follow(
    api: Api,
    shared_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FHIRBOTS_TOKEN", api.token)
    url = str(api.client.make_url(BASE))
    race = {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"}
    for index in range(3):
        patient = {
            "resourceType": "Patient",
            "extension": [
                {
                    **race,
                    "extension": [
                        {"url": "ombCategory", "valueCoding": {"code": "2106-3"}},
                    ],
                }
            ],
        }
        assert (await send(api, "PUT", f"Patient/p{index}", {**patient, "id": f"p{index}"}))[
            0
        ] == 201
    resource = us_core(shared_dir, "race")
    assert (await send(api, "PUT", f"SearchParameter/{resource['id']}", resource))[0] == 201
    assert await _run("--follow", "--url", url) == 0
    captured = capsys.readouterr()
    assert "reindex job" in captured.out and "Patient (3 resources)" in captured.out
    assert "reindex completed: 3 of 3 resources" in captured.out
    status, found, _ = await send(api, "GET", "Patient?race=2106-3")
    assert status == 200 and found["total"] == 3
    assert await _run("--type", "Nope", "--url", url) == 1
    assert "Nope" in capsys.readouterr().err


def test_job_fields() -> None:
    parameters = {
        "parameter": [
            {"name": "job", "valueString": "j"},
            {"name": "type", "valueCode": "Patient"},
            {"name": "type", "valueCode": "Goal"},
            {"name": "done", "valueInteger": 2},
        ]
    }
    assert job_fields(parameters) == {"types": ["Patient", "Goal"], "job": "j", "done": 2}
