"""BotRuntime: the dispatcher's BotInvoker, loop refusal, records and AuditEvents, the
sandbox limits of the settings."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from fhirbots.bots.executor import ExecutionResult
from fhirbots.engine.automation.runtime import result_json
from fhirbots.engine.automation.tags import BOT_TAG_SYSTEM
from fhirbots.engine.errors import Unprocessable
from fhirbots.engine.eventlog.embedded import EmbeddedEventLog, EmbeddedSettings
from fhirbots.engine.eventlog.factory import create_event_log
from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.model import WriteContext
from fhirbots.schemas.events import CausationLink
from fhirbots.schemas.executions import BotExecutionRecord
from fhirbots.schemas.notifications import ChannelSpec, Notification
from fhirbots.schemas.topics import BOT_EXECUTIONS
from tests.engine.scenarios.bots import (
    PROJECT,
    bot_resource,
    changes,
    open_engine,
    store_bot,
    store_subject,
)

FLAGGER = """
def handler(fhir, event):
    observation = event.input
    if observation is None:
        return None
    existing = fhir.search("Flag", {"identifier": "urn:test|" + event.idempotency_key})
    if existing["entry"]:
        return {"flag": existing["entry"][0]["resource"]["id"], "again": True}
    flag = fhir.create({
        "resourceType": "Flag",
        "status": "active",
        "identifier": [{"system": "urn:test", "value": event.idempotency_key}],
        "code": {"text": "look at " + observation["id"]},
        "subject": observation["subject"],
    })
    return {"flag": flag["id"], "again": False}
"""

OBSERVATION = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"text": "potassium"},
    "subject": {"reference": "Patient/p1"},
}


def notification(resource: dict[str, Any] | None = OBSERVATION, **fields: Any) -> Notification:
    values: dict[str, Any] = {
        "notification_id": "n1",
        "project": PROJECT,
        "subscription_id": "s1",
        "subscription_version": "1",
        "event_id": "e1",
        "interaction": "create",
        "resource_type": "Observation",
        "resource_id": "o1",
        "version_id": "1",
        "resource": resource,
        "time": datetime.now(UTC),
        "channel": ChannelSpec(type="rest-hook", endpoint="Bot/x"),
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    values.update(fields)
    return Notification(**values)


async def flags(engine: Engine) -> list[dict[str, Any]]:
    result = await engine.search.search(PROJECT, "Flag", [])
    return [m.content for m in result.matches if m.content is not None]


async def test_invoke_runs_the_bot_on_the_notification_and_tags_its_writes(engine: Engine) -> None:
    await store_subject(engine)
    bot_id = await store_bot(engine, FLAGGER)
    upstream = CausationLink(bot="Bot/other", execution="e0")
    outcome = await engine.bots.invoke(PROJECT, bot_id, notification(causation=(upstream,)), "s1:7")
    assert outcome.success, outcome.message
    [flag] = await flags(engine)
    assert flag["code"]["text"] == "look at o1"
    assert {"system": BOT_TAG_SYSTEM, "code": f"Bot/{bot_id}", "display": "written by a bot"} in (
        flag["meta"]["tag"]
    )
    written = [e for e in await changes(engine) if e.resource_type == "Flag"]
    assert len(written) == 1
    assert written[0].author == f"Bot/{bot_id}"
    assert written[0].traceparent == notification().traceparent
    assert written[0].causation[0] == upstream
    assert written[0].causation[1].bot == f"Bot/{bot_id}"


async def test_a_retry_keeps_the_idempotency_key(engine: Engine) -> None:
    await store_subject(engine)
    bot_id = await store_bot(engine, FLAGGER)
    assert (await engine.bots.invoke(PROJECT, bot_id, notification(), "s1:7")).success
    assert (await engine.bots.invoke(PROJECT, bot_id, notification(), "s1:7")).success
    assert len(await flags(engine)) == 1
    assert (await engine.bots.invoke(PROJECT, bot_id, notification(), "s1:8")).success
    assert len(await flags(engine)) == 2


async def test_failures_are_values(engine: Engine) -> None:
    failing = await store_bot(engine, "def handler(fhir, event):\n    raise RuntimeError('x')\n")
    outcome = await engine.bots.invoke(PROJECT, failing, notification(), "k")
    assert not outcome.success and outcome.message and "RuntimeError" in outcome.message
    missing = await engine.bots.invoke(PROJECT, "nope", notification(), "k")
    assert not missing.success and "Bot/nope" in (missing.message or "")
    draft = await store_bot(engine, FLAGGER, status="draft")
    inactive = await engine.bots.invoke(PROJECT, draft, notification(), "k")
    assert not inactive.success and "draft" in (inactive.message or "")


async def test_a_bot_without_status_is_active(engine: Engine) -> None:
    """docs/bots.md: only active bots are triggered, and ``status`` defaults to ``active``."""
    await store_subject(engine)
    resource = {k: v for k, v in bot_resource(FLAGGER).items() if k != "status"}
    written = await engine.fhir.create(PROJECT, resource, WriteContext(author="test"))
    assert written.stored is not None and written.stored.content is not None
    assert "status" not in written.stored.content
    outcome = await engine.bots.invoke(PROJECT, written.stored.id, notification(), "k")
    assert outcome.success, outcome.message
    assert len(await flags(engine)) == 1


async def test_a_bot_in_its_own_causation_chain_is_not_run(engine: Engine) -> None:
    await store_subject(engine)
    bot_id = await store_bot(engine, FLAGGER)
    loop = (CausationLink(bot=f"Bot/{bot_id}", execution="earlier"),)
    outcome = await engine.bots.invoke(PROJECT, bot_id, notification(causation=loop), "k")
    assert outcome.success and "causation chain" in (outcome.message or "")
    assert await flags(engine) == []


async def test_id_only_notifications_read_the_version_that_matched(engine: Engine) -> None:
    await store_subject(engine)
    bot_id = await store_bot(engine, FLAGGER)
    stored = await engine.fhir.create(
        PROJECT, {k: v for k, v in OBSERVATION.items() if k != "id"}, WriteContext()
    )
    assert stored.stored is not None
    oid = stored.stored.id
    note = notification(resource=None, resource_id=oid)
    assert (await engine.bots.invoke(PROJECT, bot_id, note, "k")).success
    [flag] = await flags(engine)
    assert flag["code"]["text"] == f"look at {oid}"


async def test_every_execution_is_recorded_on_the_executions_topic(engine: Engine) -> None:
    engine.event_log = create_event_log(kafka_bootstrap=None, data_dir=engine.settings.data_dir)
    await engine.event_log.start()
    await store_subject(engine)
    bot_id = await store_bot(engine, FLAGGER)
    await engine.bots.invoke(PROJECT, bot_id, notification(), "s1:1")
    loop = (CausationLink(bot=f"Bot/{bot_id}", execution="earlier"),)
    await engine.bots.invoke(PROJECT, bot_id, notification(causation=loop), "s1:2")
    records = []
    for partition in range(await engine.event_log.partitions(BOT_EXECUTIONS)):
        for record in await engine.event_log.read(BOT_EXECUTIONS, partition, offset=0):
            records.append(BotExecutionRecord.model_validate_json(record.value))
            assert record.key == f"{PROJECT}/Bot/{bot_id}"
    assert [r.status for r in records] == ["success", "skipped"]
    ran = records[0]
    assert ran.trigger == "subscription" and ran.bot_version == "1"
    assert ran.idempotency_key == "s1:1" and ran.fhir_calls == 2
    assert ran.output == {"flag": (await flags(engine))[0]["id"], "again": False}
    assert ran.trace_id == notification().traceparent
    audits = await engine.search.search(PROJECT, "AuditEvent", [])
    assert len(audits.matches) == 1
    audit = audits.matches[0].content
    assert audit is not None
    assert audit["entity"][0]["name"] == ran.execution_id
    audit_change = [e for e in await changes(engine) if e.resource_type == "AuditEvent"]
    assert audit_change[0].causation[-1] == CausationLink(
        bot=f"Bot/{bot_id}", execution=ran.execution_id
    )


async def test_an_event_log_that_fails_is_counted_and_the_execution_goes_on(
    engine: Engine,
) -> None:
    log = EmbeddedEventLog(EmbeddedSettings.in_data_dir(engine.settings.data_dir))
    engine.event_log = log
    await log.start()
    await store_subject(engine)
    bot_id = await store_bot(engine, FLAGGER)
    assert (await engine.bots.invoke(PROJECT, bot_id, notification(), "s1:1")).success
    with contextlib.closing(sqlite3.connect(log.settings.path)) as conn:
        conn.execute("DROP TABLE records")  # every publish fails from now on
    failures = {"what": "record"}
    before = REGISTRY.get_sample_value("fhirbots_bot_record_failures_total", failures) or 0.0
    outcome = await engine.bots.invoke(PROJECT, bot_id, notification(), "s1:2")
    assert outcome.success, outcome.message
    assert len(await flags(engine)) == 2
    after = REGISTRY.get_sample_value("fhirbots_bot_record_failures_total", failures)
    assert after == before + 1


async def test_result_json_is_serialisable(engine: Engine) -> None:
    bot_id = await store_bot(engine, "def handler(fhir, event):\n    return [1, 'a']\n")
    loaded = await engine.bots.load(PROJECT, bot_id)
    request = await engine.bots.request(loaded, PROJECT, None)
    result = await engine.bots.run(request, trigger="execute", bot_version=loaded.version)
    assert orjson.loads(orjson.dumps(result_json(result)))["output"] == [1, "a"]


async def test_start_bots_warms_workers_and_runs_the_scheduler(engine: Engine) -> None:
    await engine.start_bots(cron=True)
    assert engine.event_log is not None
    assert engine.bots.scheduler is not None
    policy = engine.bots.policy
    assert len(engine.bots.executor.worker_pids) == policy.pool_size + policy.spare_workers
    await engine.bots.close()
    assert engine.bots.scheduler is None
    assert engine.bots.executor.worker_pids == []


LOOPER = "def handler(fhir, event):\n    while True:\n        pass\n"

SHORTENER = """
import textwrap

def handler(fhir, event):
    return textwrap.shorten("limits set by the operator", 16)
"""


async def run_once(engine: Engine, bot_id: str) -> ExecutionResult:
    loaded = await engine.bots.load(PROJECT, bot_id)
    request = await engine.bots.request(loaded, PROJECT, None)
    return await engine.bots.run(request, trigger="execute", bot_version=loaded.version)


async def test_a_configured_timeout_stops_a_running_bot(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, bot_timeout=1.0, bot_workers=1)
    async with open_engine("sqlite", tmp_path, settings) as engine:
        result = await run_once(engine, await store_bot(engine, LOOPER))
    assert result.status == "timeout"
    assert result.error == "the bot ran longer than its 1 s timeout"


async def test_a_module_allowed_by_setting_can_be_imported(tmp_path: Path) -> None:
    async with open_engine("sqlite", tmp_path / "default") as engine:
        with pytest.raises(Unprocessable, match="textwrap"):
            await store_bot(engine, SHORTENER)
    relaxed = Settings(
        data_dir=tmp_path / "relaxed",
        bot_allowed_modules=(*Settings().bot_allowed_modules, "textwrap"),
        bot_workers=1,
    )
    async with open_engine("sqlite", relaxed.data_dir, relaxed) as engine:
        result = await run_once(engine, await store_bot(engine, SHORTENER))
    assert result.ok, result.error
    assert result.output == "limits set [...]"
