"""Fixtures for the embedded event log's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from fhirbots.engine.eventlog.embedded import EmbeddedEventLog, EmbeddedSettings


@pytest.fixture
def settings(tmp_path: Path) -> EmbeddedSettings:
    # A long poll interval proves in-process consumers are woken by publishes, not by polling.
    return EmbeddedSettings(
        path=tmp_path / "log.sqlite",
        synchronous="NORMAL",
        poll_interval=timedelta(seconds=5),
        heartbeat_interval=timedelta(milliseconds=100),
        session_timeout=timedelta(seconds=1),
    )


@pytest.fixture
async def log(settings: EmbeddedSettings) -> AsyncIterator[EmbeddedEventLog]:
    event_log = EmbeddedEventLog(settings)
    await event_log.start()
    yield event_log
    await event_log.stop()
