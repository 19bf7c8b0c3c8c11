from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirbots.engine.eventlog.faust_app import Stage
from fhirbots.engine.eventlog.faust_worker import StageSpecError, load_stage

STAGE_MODULE = """
from fhirbots.engine.eventlog.faust_app import Stage

async def handle(ctx, record):
    return []

stage = Stage(name="s", source="in", handler=handle)

def make_stage():
    return Stage(name="made", source="in", handler=handle)

not_a_stage = 42
"""


@pytest.fixture
def stage_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "unit_stage_module.py").write_text(STAGE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "unit_stage_module"
    sys.modules.pop("unit_stage_module", None)


def test_load_stage_attribute_and_factory(stage_module: str) -> None:
    assert isinstance(load_stage(f"{stage_module}:stage"), Stage)
    assert load_stage(f"{stage_module}:make_stage").name == "made"


@pytest.mark.parametrize(
    "reference",
    ["no_colon", "unit_stage_module:missing", "unit_stage_module:not_a_stage", "nope_mod:x"],
)
def test_load_stage_errors(stage_module: str, reference: str) -> None:
    with pytest.raises(StageSpecError):
        load_stage(reference)
