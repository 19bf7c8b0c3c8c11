"""CronScheduler: due bots, one run per (bot, tick) across schedulers, the minute loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fhirbots.engine.automation.scheduler import CronScheduler
from fhirbots.engine.automation.store_sqlite import SqliteBotStore
from fhirbots.engine.runtime import Engine
from tests.engine.scenarios.bots import PROJECT, store_bot, store_subject
from tests.waiting import eventually

TICKER = """
def handler(fhir, event):
    fhir.create({
        "resourceType": "Flag",
        "status": "active",
        "identifier": [{"system": "urn:tick", "value": event.idempotency_key}],
        "code": {"text": "tick"},
        "subject": {"reference": "Patient/p1"},
    })
    return event.input
"""

TICK = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
"""A Monday, 09:15 UTC."""


async def tick_flags(engine: Engine) -> list[str]:
    result = await engine.search.search(PROJECT, "Flag", [])
    return [m.content["identifier"][0]["value"] for m in result.matches if m.content]


async def open_store(path: Path) -> SqliteBotStore:
    store = SqliteBotStore(path)
    await store.open()
    return store


async def test_due_lists_active_bots_whose_schedule_matches(engine: Engine) -> None:
    every_quarter = await store_bot(engine, TICKER, cronString="*/15 * * * *")
    await store_bot(engine, TICKER, cronString="0 * * * *")
    await store_bot(engine, TICKER, cronString="*/15 * * * *", status="draft")
    await store_bot(engine, TICKER)
    weekdays = await store_bot(engine, TICKER, cronString="15 9 * * MON-FRI")
    store = await open_store(engine.settings.data_dir / "claims.db")
    try:
        scheduler = CronScheduler(engine.bots, engine.storage, store)
        due = await scheduler.due(TICK)
        assert sorted(b.bot.id or "" for _, b in due) == sorted([every_quarter, weekdays])
        assert {project for project, _ in due} == {PROJECT}
    finally:
        await store.close()


async def test_a_tick_runs_once_however_many_schedulers(engine: Engine) -> None:
    await store_subject(engine)
    bot_id = await store_bot(engine, TICKER, cronString="*/15 * * * *")
    path = engine.settings.data_dir / "claims.db"
    stores = [await open_store(path) for _ in range(3)]
    try:
        schedulers = [
            CronScheduler(engine.bots, engine.storage, store, owner=f"proc-{i}")
            for i, store in enumerate(stores)
        ]
        ran = await asyncio.gather(*(s.run_tick(TICK) for s in schedulers))
        assert sorted(ran) == [0, 0, 1]
        assert await tick_flags(engine) == [f"cron:Bot/{bot_id}:2026-03-02T09:15:00Z"]
        assert await schedulers[0].run_tick(TICK) == 0
        assert (
            sum(await asyncio.gather(*(s.run_tick(TICK.replace(minute=30)) for s in schedulers)))
            == 1
        )
        assert len(await tick_flags(engine)) == 2
    finally:
        for store in stores:
            await store.close()


async def test_the_loop_wakes_at_the_minute_and_runs_due_bots(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store_subject(engine)
    await store_bot(engine, TICKER, cronString="16 9 * * *")
    store = await open_store(engine.settings.data_dir / "claims.db")
    # The clock stands still just before 09:16, so the loop wakes for 09:16 again and again:
    # the bot runs the first time only, as the tick is claimed once.
    almost = TICK.replace(second=59, microsecond=950_000)
    scheduler = CronScheduler(engine.bots, engine.storage, store, clock=lambda: almost)
    ran: list[int] = []
    run_tick = scheduler.run_tick

    async def counted(tick: datetime) -> int:
        ran.append(await run_tick(tick))
        return ran[-1]

    monkeypatch.setattr(scheduler, "run_tick", counted)
    scheduler.start()
    try:
        # Ticks run side by side, so the one that runs the bot may not be the first to end.
        await eventually(
            lambda: len(ran) >= 3 and any(ran), "three ends of the 09:16 tick, one with a run"
        )
    finally:
        await scheduler.stop()
        await store.close()
    assert sum(ran) == 1
    assert len(await tick_flags(engine)) == 1
