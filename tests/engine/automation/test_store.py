"""The bot store on SQLite and PostgreSQL: claims are exclusive, jobs round-trip."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fhirbots.engine.automation.errors import BotStoreError
from fhirbots.engine.automation.store import BotStore, Job
from fhirbots.engine.automation.store_sqlite import SqliteBotStore
from tests.conftest import POSTGRES, REPO_ROOT, child_env, postgres_dsn, reset_postgres

TICK = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)

CLAIMER = """
import asyncio, sys
from datetime import datetime
from fhirbots.engine.automation.store_sqlite import SqliteBotStore

async def main():
    store = SqliteBotStore(__import__("pathlib").Path(sys.argv[1]))
    await store.open()
    won = await store.claim_tick("p1", "Bot/b1", datetime.fromisoformat(sys.argv[2]), sys.argv[3])
    await store.close()
    print("won" if won else "lost")

asyncio.run(main())
"""


@pytest.fixture(params=["sqlite", POSTGRES])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BotStore]:
    """Each adapter, open and empty."""
    opened: BotStore
    if request.param == "sqlite":
        opened = SqliteBotStore(tmp_path / "bots.db")
    else:
        from fhirbots.engine.automation.store_postgres import PostgresBotStore

        dsn = postgres_dsn()
        await reset_postgres(dsn)
        opened = PostgresBotStore(dsn)
    await opened.open()
    yield opened
    await opened.close()


async def test_claims_are_exclusive_per_bot_and_tick(store: BotStore) -> None:
    assert await store.claim_tick("p1", "Bot/a", TICK, "one")
    assert not await store.claim_tick("p1", "Bot/a", TICK, "two")
    assert await store.claim_tick("p1", "Bot/b", TICK, "two")
    assert await store.claim_tick("p2", "Bot/a", TICK, "two")
    assert await store.claim_tick("p1", "Bot/a", TICK + timedelta(minutes=1), "two")
    assert await store.purge_claims(TICK + timedelta(minutes=1)) == 3
    assert await store.claim_tick("p1", "Bot/a", TICK, "three")


async def test_jobs_round_trip_and_stay_in_their_project(store: BotStore) -> None:
    job = Job("j1", "p1", "Bot/a", "running", None, TICK)
    await store.add_job(job)
    assert await store.get_job("p1", "j1") == job
    assert await store.get_job("p2", "j1") is None
    await store.finish_job("j1", {"status": "success", "output": [1]}, TICK)
    done = await store.get_job("p1", "j1")
    assert done is not None and done.state == "done"
    assert done.result == {"status": "success", "output": [1]}


async def test_closed_store_raises_its_own_error(tmp_path: Path) -> None:
    store = SqliteBotStore(tmp_path / "bots.db")
    with pytest.raises(BotStoreError):
        await store.get_job("p1", "j1")


async def test_processes_racing_for_a_tick_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "bots.db"
    warm = SqliteBotStore(path)
    await warm.open()
    await warm.close()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLAIMER,
            str(path),
            TICK.isoformat(),
            f"proc-{i}",
            cwd=REPO_ROOT,
            env=child_env(),
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(4)
    ]
    outputs = [(await p.communicate())[0].decode().strip() for p in procs]
    assert sorted(outputs) == ["lost", "lost", "lost", "won"]
