"""``fhirbots backup``: an online copy of a running embedded engine, started again as is."""

from __future__ import annotations

import asyncio
import json
import stat
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from fhirbots.engine.cli.backup import backup
from fhirbots.engine.settings import Settings
from tests.engine.scenarios.process import ServedProcess, run_fhirbots, serve_process

pytestmark = pytest.mark.integration


def request(served: ServedProcess, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    call = urllib.request.Request(
        served.base + path,
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {served.token}",
            "Content-Type": "application/fhir+json",
        },
    )
    with urllib.request.urlopen(call, timeout=30) as answer:
        return json.load(answer)


async def test_a_backup_of_a_running_engine_starts_with_its_data(tmp_path: Path) -> None:
    data, copy = tmp_path / "data", tmp_path / "copy"
    async with serve_process(data) as served:
        patient = {"resourceType": "Patient", "name": [{"family": "Kept"}]}
        created = await asyncio.to_thread(request, served, "POST", "/Patient", patient)
        status, out, err = await run_fhirbots("backup", str(copy), "--data-dir", str(data))
        assert status == 0, err
        assert "backed up" in out
        status, _, err = await run_fhirbots("backup", str(copy), "--data-dir", str(data))
        assert status == 2 and "not empty" in err
    assert stat.S_IMODE(copy.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in copy.iterdir())
    async with serve_process(copy) as restored:
        assert restored.token == served.token
        found = await asyncio.to_thread(request, restored, "GET", f"/Patient/{created['id']}")
        assert found["name"][0]["family"] == "Kept"


async def test_backup_refuses_what_it_cannot_copy(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no embedded datastore"):
        backup(Settings(data_dir=tmp_path / "empty"), tmp_path / "copy", progress=False)
    postgres = "postgresql://nobody@127.0.0.1/none"
    status, _, err = await run_fhirbots(
        "backup", str(tmp_path / "x"), FHIRBOTS_DATABASE_URL=postgres
    )
    assert status == 2 and "pg_dump" in err
