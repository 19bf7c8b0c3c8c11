"""The public surface of the bots package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fhirbots
from fhirbots import bots

IMPORT_ROOT = Path(fhirbots.__file__).parent.parent


def test_exported_names_are_what_they_should_be() -> None:
    assert bots.__all__ == sorted(bots.__all__)
    assert set(dir(bots)) == set(bots.__all__)
    for name in bots.__all__:
        value = getattr(bots, name)
        assert value.__name__ == name
        assert value.__module__.startswith("fhirbots.bots.")
    assert bots.ProcessBotExecutor.__module__ == "fhirbots.bots.executor"
    assert issubclass(bots.BotCompileError, bots.BotError)
    missing = "not_a_name"
    with pytest.raises(AttributeError):
        getattr(bots, missing)


def test_importing_the_package_loads_no_engine_side_modules() -> None:
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import fhirbots.bots, fhirbots.bots._worker; "
        "print(sorted(m for m in ('structlog', 'prometheus_client', 'fhirbots.bots.executor', "
        "'pydantic') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(IMPORT_ROOT)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
