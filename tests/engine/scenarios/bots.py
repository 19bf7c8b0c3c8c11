"""Scenario helpers of the engine's bot tests: an open engine with a project, Bot resources,
and the change events the datastore recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from fhirbots.engine.runtime import Engine
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.model import WriteContext
from fhirbots.schemas.events import ChangeEvent
from tests.conftest import POSTGRES
from tests.engine.conftest import open_storage

PROJECT = "p1"


def bot_resource(code: str, name: str = "test-bot", **fields: Any) -> dict[str, Any]:
    """A Bot resource as FHIR JSON."""
    return {"resourceType": "Bot", "name": name, "code": code, **fields}


async def store_bot(engine: Engine, code: str, **fields: Any) -> str:
    """Create a Bot in :data:`PROJECT` through the FHIR service; returns its id."""
    written = await engine.fhir.create(
        PROJECT, bot_resource(code, **fields), WriteContext(author="test")
    )
    assert written.stored is not None
    return written.stored.id


async def store_subject(engine: Engine) -> None:
    """Create ``Patient/p1`` in :data:`PROJECT`: the subject the scenarios' resources refer to
    (a reference to a local resource must resolve, see docs/rest.md)."""
    await engine.fhir.update(
        PROJECT,
        "Patient",
        "p1",
        {"resourceType": "Patient", "id": "p1"},
        WriteContext(author="test"),
    )


async def changes(engine: Engine) -> list[ChangeEvent]:
    """Every change event committed so far (from the outbox), oldest first."""
    rows = await engine.storage.outbox_pending(10_000)
    return [ChangeEvent.model_validate_json(row.payload) for row in rows]


@asynccontextmanager
async def open_engine(
    kind: str, tmp_path: Path, settings: Settings | None = None
) -> AsyncIterator[Engine]:
    """An open engine (no HTTP) on storage ``kind``, with project :data:`PROJECT`.

    Args:
        kind: The storage adapter (see :func:`tests.engine.conftest.open_storage`).
        tmp_path: Its data dir.
        settings: The engine's settings (the defaults in ``tmp_path`` when None).
    """
    storage = await open_storage(kind, tmp_path)
    opened = Engine(settings or Settings(data_dir=tmp_path), storage=storage)
    try:
        await opened.storage.ensure_project(PROJECT, "Project one")
        yield opened
    finally:
        await opened.close()


@pytest.fixture(params=["sqlite", POSTGRES])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    """An open engine (no HTTP) on each storage adapter, with project :data:`PROJECT`."""
    async with open_engine(request.param, tmp_path) as opened:
        yield opened
