"""``fhirbots deadletter`` and ``fhirbots resend`` against a served engine."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from fhirbots.engine.cli.delivery import add_commands
from fhirbots.engine.delivery.policy import MAX_ATTEMPTS_URLS
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.model import WriteContext
from tests.engine.scenarios.delivery import Receiver
from tests.waiting import eventually


async def _run(*argv: str) -> int:
    """Run a command in this process. The served engine runs here too and logs to stdout
    whenever its stages wake; its lines are captured apart, so stdout holds only the
    command's output."""
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    with structlog.testing.capture_logs():
        result: int = await args.run(args)
    return result


@pytest.fixture
async def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Engine]:
    engine = Engine(Settings(data_dir=tmp_path, allowed_endpoint_networks=("127.0.0.1/32",)))
    await engine.open()
    token = await engine.create_project("p1", "Project one")
    await engine.start_relay()
    await engine.start_matcher()
    dispatcher = await engine.start_dispatcher()
    await dispatcher.wait_assigned()
    server = TestServer(engine.app())
    await server.start_server()
    monkeypatch.setenv("FHIRBOTS_URL", str(server.make_url("/fhir/R4")))
    monkeypatch.setenv("FHIRBOTS_TOKEN", token)
    yield engine
    await server.close()
    await engine.close()


async def test_list_retry_discard_resend(
    served: Engine, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    healthy = False

    async def flaky(_: web.Request, __: int) -> web.Response:
        return web.Response(status=200 if healthy else 502)

    receiver.on("/cli", flaky)
    context = WriteContext(author="test")
    subscription = {
        "resourceType": "Subscription",
        "status": "active",
        "reason": "cli",
        "criteria": "Patient?gender=male",
        "channel": {
            "type": "rest-hook",
            "endpoint": receiver.url + "/cli",
            "payload": "application/fhir+json",
        },
        "extension": [{"url": MAX_ATTEMPTS_URLS[0], "valueInteger": 1}],
    }
    await served.fhir.update("p1", "Subscription", "s1", subscription, context)
    for name in ("A", "B"):
        patient = {"resourceType": "Patient", "gender": "male", "name": [{"family": name}]}
        await served.fhir.create("p1", patient, context)
    dispatcher = served.dispatcher
    assert dispatcher is not None

    async def two_dead() -> bool:
        return len(await dispatcher.store.dead_letters("p1")) == 2

    await eventually(two_dead, "two dead letters")
    capsys.readouterr()
    assert await _run("deadletter", "list", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["eventNumber"] for r in rows] == [1, 2]
    assert rows[0]["subscription"] == "Subscription/s1" and "502" in rows[0]["error"]

    assert await _run("deadletter", "retry") == 2  # refuses without a selection
    assert await _run("deadletter", "discard", rows[1]["id"]) == 0
    assert "discarded 1 dead letter" in capsys.readouterr().out
    healthy = True
    assert await _run("deadletter", "retry", "--all") == 0
    assert "requeued 1 dead letter" in capsys.readouterr().out
    got = await receiver.wait_for("/cli", 3)
    assert got[-1].headers["X-Event-Number"] == "1"

    patient_id = json.loads(got[-1].body)["id"]
    assert await _run("resend", "s1", f"Patient/{patient_id}") == 0
    assert "as event 3" in capsys.readouterr().out
    got = await receiver.wait_for("/cli", 4)
    assert got[-1].headers["X-Event-Number"] == "3"
    assert await _run("deadletter", "list") == 0
    assert "no dead letters" in capsys.readouterr().out
