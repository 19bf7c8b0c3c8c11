"""The README's tour, run as written against a fresh ``fhirbots serve``: every command must
succeed (its curl calls fail on any 4xx or 5xx) and print what the comments say."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.engine.scenarios.process import serve_process

pytestmark = pytest.mark.integration

README_PORT = "127.0.0.1:8080"


def tour_script(readme: str) -> str:
    """The shell blocks of the README's "A short tour" section, in order."""
    section = readme.split("\n## A short tour\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert blocks, "the tour has no sh blocks"
    return "\n".join(blocks)


def test_the_tour_is_what_the_test_runs() -> None:
    script = tour_script((REPO_ROOT / "README.md").read_text())
    assert README_PORT in script
    assert "examples/tour/patient.json" in script
    assert "fhirbots load examples/tour/data" in script
    for name in re.findall(r"examples/tour/[\w/.-]+\.json", script):
        assert (REPO_ROOT / name).is_file(), name


async def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    script = tour_script((REPO_ROOT / "README.md").read_text())
    checkout = tmp_path / "checkout"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / "examples").symlink_to(REPO_ROOT / "examples")
    (checkout / ".venv" / "bin" / "fhirbots").symlink_to(Path(sys.executable).parent / "fhirbots")
    async with serve_process(checkout / ".fhirbots") as served:
        port = served.base.split("//", 1)[1].split("/", 1)[0]
        tour = script.replace(README_PORT, port)
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            tour,
            cwd=checkout,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("FHIRBOTS_")},
                "FHIRBOTS_URL": served.base,  # where the README's client commands go
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, text[-4000:]
    lines = text.splitlines()
    assert "410" in lines, "a read after the delete answers 410"
    assert '"family":"Windsor"' in text.replace(" ", "")
    assert '"resourceType":"Bundle","type":"searchset"' in text.replace(" ", "")
    assert "8867-4" in text and '"total":1' in text.replace(" ", "")
