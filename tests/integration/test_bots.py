"""Bots end to end, on both event-log adapters (embedded and a real Kafka broker): a
Subscription whose endpoint is ``Bot/<id>`` fires on a write, the example bot writes back
through the engine, the writes are visible, tagged and carry the causation chain, the
execution is recorded and audited, and a bot reacting to its own writes is stopped."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fhirbots.engine.automation.tags import BOT_TAG_SYSTEM, EXECUTION_TAG_SYSTEM
from fhirbots.engine.eventlog.errors import TopicNotFound
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.schemas.events import ChangeEvent
from fhirbots.schemas.executions import BotExecutionRecord
from fhirbots.schemas.topics import BOT_EXECUTIONS, CHANGES
from tests.conftest import REPO_ROOT, shared_path
from tests.waiting import eventually

pytestmark = pytest.mark.integration

WAIT_SECONDS = 90.0
"""Kafka's first group joins (relay, matcher, dispatcher) can take a while on a busy host."""

EXAMPLES = REPO_ROOT / "examples" / "bots"
SYNTHEA_PATIENT = "Lavern_Kassulke_1b3c4971-6ef2-4a46-b7d7-f56c91d78135.json"
POTASSIUM = "6298-4"

CRITICAL_SCOPES = [
    {"resourceType": "Flag", "interaction": ["search", "create"]},
    {"resourceType": "Task", "interaction": ["create"]},
]

ECHO_FLAGGER = """
def handler(fhir, event):
    flag = event.input
    fhir.create({
        "resourceType": "Flag",
        "status": "active",
        "code": {"text": "echo of " + flag["id"]},
        "subject": flag["subject"],
    })
"""
"""A bot subscribed to Flag that writes a Flag: without the loop guard it would never stop."""


class Stack:
    """A served engine with relay, matcher, dispatcher and bots running, and one project."""

    def __init__(
        self,
        engine: Engine,
        client: TestClient[web.Request, web.Application],
        project: str,
        token: str,
    ) -> None:
        self.engine = engine
        self.client = client
        self.project = project
        self.token = token

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        resp = await self.client.request(
            method,
            f"/fhir/R4/{path}",
            data=None if body is None else orjson.dumps(body),
            headers={
                "Authorization": f"Bearer {self.token}",
                "Content-Type": "application/fhir+json",
            },
        )
        assert resp.status == status, await resp.text()
        return await resp.json()

    async def search(self, query: str) -> list[dict[str, Any]]:
        bundle = await self.call("GET", query)
        return [
            e["resource"]
            for e in bundle.get("entry", [])
            if e.get("search", {}).get("mode") == "match"
        ]

    async def bot(self, code: str, name: str, **fields: Any) -> str:
        created = await self.call(
            "POST", "Bot", {"resourceType": "Bot", "name": name, "code": code, **fields}, 201
        )
        return str(created["id"])

    async def subscribe(self, criteria: str, bot_id: str) -> None:
        subscription = {
            "resourceType": "Subscription",
            "status": "active",
            "reason": "bot test",
            "criteria": criteria,
            "channel": {
                "type": "rest-hook",
                "endpoint": f"Bot/{bot_id}",
                "payload": "application/fhir+json",
            },
        }
        await self.call("POST", "Subscription", subscription, 201)

    async def read_topic(self, topic: str) -> list[bytes]:
        log = self.engine.event_log
        assert log is not None
        out: list[bytes] = []
        try:
            partitions = await log.partitions(topic)
        except TopicNotFound:
            return out  # nothing published yet
        for partition in range(partitions):
            offset = 0
            while batch := await log.read(topic, partition, offset=offset, limit=500):
                out.extend(r.value for r in batch)
                offset = batch[-1].offset + 1
        return out


@pytest.fixture
async def stack(
    adapter: tuple[str, str], tmp_path: Path, unique: Callable[[str], str]
) -> AsyncIterator[Stack]:
    kind, location = adapter
    settings = Settings(data_dir=tmp_path, kafka=location if kind == "kafka" else None)
    engine = Engine(settings)
    await engine.open()
    project = unique("bots")  # topics are the engine's own: keep projects apart on one broker
    token = await engine.create_project(project, "Bots end to end")
    await engine.start_relay()
    await engine.start_matcher()
    await engine.start_dispatcher()
    await engine.start_bots(cron=False)
    client = TestClient(TestServer(engine.app()))
    await client.start_server()
    yield Stack(engine, client, project, token)
    await client.close()
    await engine.close()


def critical_potassium(bundle: dict[str, Any]) -> dict[str, Any]:
    for entry in bundle["entry"]:
        resource = entry["resource"]
        codes = [c.get("code") for c in (resource.get("code") or {}).get("coding", [])]
        if resource["resourceType"] == "Observation" and POTASSIUM in codes:
            return dict(resource)
    raise AssertionError("the sample has no potassium result")


async def test_subscription_runs_the_example_bot_which_writes_back(stack: Stack) -> None:
    bundle = orjson.loads(
        (shared_path() / "fhir-samples" / "synthea-r4" / SYNTHEA_PATIENT).read_bytes()
    )
    await stack.call("POST", "", bundle)
    bot_id = await stack.bot(
        (EXAMPLES / "critical_lab_flag.py").read_text(), "critical-lab", access=CRITICAL_SCOPES
    )
    await stack.subscribe("Observation?code=http://loinc.org|6298-4", bot_id)

    stored = (await stack.search("Observation?code=http://loinc.org|6298-4&_count=1"))[0]
    critical = copy.deepcopy(stored)
    critical["valueQuantity"]["value"] = 7.2
    updated = await stack.call("PUT", f"Observation/{stored['id']}", critical)
    key = f"Observation/{stored['id']}/_history/{updated['meta']['versionId']}"

    flags = await eventually(
        lambda: stack.search(f"Flag?identifier=urn:fhirbots:critical-lab|{key}"),
        "the Flag",
        within=WAIT_SECONDS,
    )
    [flag] = flags
    assert flag["code"]["text"] == "Critical high Potassium: 7.2 mmol/L"
    tags = {t["system"]: t["code"] for t in flag["meta"]["tag"]}
    assert tags[BOT_TAG_SYSTEM] == f"Bot/{bot_id}"
    execution = tags[EXECUTION_TAG_SYSTEM]
    # The bot writes the Flag, then the Task: the Task may not be there yet.
    [task] = await eventually(
        lambda: stack.search(f"Task?identifier=urn:fhirbots:critical-lab|{key}"),
        "the Task",
        within=WAIT_SECONDS,
    )
    assert task["priority"] == "stat"
    tagged = await stack.search(f"Flag?_tag={BOT_TAG_SYSTEM}|Bot/{bot_id}")
    assert [f["id"] for f in tagged] == [flag["id"]]

    async def flag_change() -> list[ChangeEvent]:
        events = [ChangeEvent.model_validate_json(v) for v in await stack.read_topic(CHANGES)]
        return [e for e in events if e.project == stack.project and e.resource_type == "Flag"]

    [change] = await eventually(flag_change, "the Flag's change event", within=WAIT_SECONDS)
    assert change.author == f"Bot/{bot_id}"
    assert [(link.bot, link.execution) for link in change.causation] == [
        (f"Bot/{bot_id}", execution)
    ]

    async def records() -> list[BotExecutionRecord]:
        found = [
            BotExecutionRecord.model_validate_json(v)
            for v in await stack.read_topic(BOT_EXECUTIONS)
        ]
        return [r for r in found if r.execution_id == execution]

    # (Observations of the load still in flight may also reach the new subscription; the
    # bot leaves normal values alone, so only this execution's record matters here.)
    [record] = await eventually(records, "the execution record", within=WAIT_SECONDS)
    assert record.project == stack.project and record.bot == f"Bot/{bot_id}"
    assert record.execution_id == execution and record.status == "success"
    assert record.trigger == "subscription" and record.fhir_calls == 3
    assert record.idempotency_key and record.idempotency_key.startswith(f"{stack.project}/")
    audits = await stack.search("AuditEvent?entity-name=" + execution)
    assert len(audits) == 1 and audits[0]["outcome"] == "0"


async def test_a_bot_reacting_to_its_own_writes_is_stopped(stack: Stack) -> None:
    bot_id = await stack.bot(ECHO_FLAGGER, "echo", auditEventTrigger="never")
    patient = await stack.call("POST", "Patient", {"resourceType": "Patient"}, 201)
    await stack.subscribe(f"Flag?subject=Patient/{patient['id']}", bot_id)
    seed = {
        "resourceType": "Flag",
        "status": "active",
        "code": {"text": "seed"},
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    first = await stack.call("POST", "Flag", seed, 201)
    await eventually(
        lambda: stack.search(f"Flag?_tag={BOT_TAG_SYSTEM}|Bot/{bot_id}"),
        "the bot's Flag",
        within=WAIT_SECONDS,
    )

    async def refused() -> list[BotExecutionRecord]:
        found = [
            BotExecutionRecord.model_validate_json(v)
            for v in await stack.read_topic(BOT_EXECUTIONS)
        ]
        return [r for r in found if r.bot == f"Bot/{bot_id}" and r.status == "skipped"]

    # Its own Flag notifies the bot again: that run is refused as a loop and recorded, so
    # no further Flag can come.
    await eventually(refused, "the bot's looping run refused", within=WAIT_SECONDS)
    flags = await stack.search("Flag?_count=50")
    assert sorted(f["code"]["text"] for f in flags) == sorted(["seed", f"echo of {first['id']}"])


PATIENT_WATCHER = """
def handler(fhir, event):
    ready = fhir.search("Basic", {"identifier": "urn:test|ready"})
    if not ready["entry"]:
        raise RuntimeError("not ready yet")
    fhir.create({
        "resourceType": "Flag",
        "status": "active",
        "code": {"text": event.idempotency_key},
        "subject": {"reference": "Patient/" + event.input["id"]},
    })
"""
"""Fails until a marker exists, then writes a Flag naming its idempotency key."""


async def test_a_failed_run_is_retried_with_the_same_idempotency_key(stack: Stack) -> None:
    bot_id = await stack.bot(PATIENT_WATCHER, "watcher", auditEventTrigger="on-error")
    await stack.subscribe("Patient?family=Retry", bot_id)
    await stack.call(
        "POST", "Patient", {"resourceType": "Patient", "name": [{"family": "Retry"}]}, 201
    )

    async def runs() -> list[BotExecutionRecord]:
        found = [
            BotExecutionRecord.model_validate_json(v)
            for v in await stack.read_topic(BOT_EXECUTIONS)
        ]
        return [r for r in found if r.bot == f"Bot/{bot_id}"]

    [failed, *_] = await eventually(runs, "a failed run", within=WAIT_SECONDS)
    assert failed.status == "error" and "not ready yet" in (failed.error or "")
    marker = {
        "resourceType": "Basic",
        "identifier": [{"system": "urn:test", "value": "ready"}],
        "code": {"text": "ready"},
    }
    await stack.call("POST", "Basic", marker, 201)
    [flag] = await eventually(
        lambda: stack.search("Flag"), "the retried run's Flag", within=WAIT_SECONDS
    )
    assert flag["code"]["text"] == failed.idempotency_key
    attempts = await runs()
    assert attempts[-1].status == "success"
    assert {r.idempotency_key for r in attempts} == {failed.idempotency_key}
    audits = await stack.search("AuditEvent")
    assert len(audits) == len(attempts) - 1  # on-error: the failures only
