"""The README's commands on a stock Linux Python: ``make`` builds a project virtual environment.

A distribution's own ``python3`` (Debian 12, Ubuntu 24.04) is externally managed (PEP 668) and
refuses pip installs, so ``make serve`` and ``make test`` work in ``.venv/`` made from
``$(PYTHON)`` by ``deploy/venv.sh``. The fast tests here check that script's messages with
stand-in interpreters; one integration test runs ``make serve`` in a fresh clone on the
distribution's interpreter, which is slow (a virtual environment and every dependency).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_SCRIPT = REPO / "deploy" / "venv.sh"

SYSTEM_PYTHON = Path("/usr/bin/python3")
"""Where Debian and Ubuntu install the distribution's own interpreter."""

SERVE_DEADLINE = 900.0
"""Seconds ``make serve`` may take to answer in a fresh clone: it makes the virtual environment
and installs every dependency from the package index first, on a machine other suites share."""

STOP_DEADLINE = 60.0
"""Seconds the server may take to stop after SIGTERM."""


def _run_script(python: Path | str, venv: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(VENV_SCRIPT), str(python), str(venv)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _stand_in(tmp_path: Path, body: str) -> Path:
    """A shell script standing in for an interpreter; ``$2`` is the code passed with ``-c``."""
    path = tmp_path / "python3"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_an_old_interpreter_gets_a_message(tmp_path: Path) -> None:
    python = _stand_in(tmp_path, "echo 2.7")
    result = _run_script(python, tmp_path / "venv")
    assert result.returncode == 1
    assert "fhirbots needs Python 3.11 or newer" in result.stderr
    assert "is Python 2.7" in result.stderr
    assert not (tmp_path / "venv").exists()


def test_an_interpreter_without_ensurepip_gets_a_message(tmp_path: Path) -> None:
    # What Debian's python3 does without python3-venv: venv imports, ensurepip does not.
    python = _stand_in(
        tmp_path,
        'case "$2" in *ensurepip*) echo "No module named ensurepip" >&2; exit 1;; esac\necho 3.11',
    )
    result = _run_script(python, tmp_path / "venv")
    assert result.returncode == 1
    assert "cannot create virtual environments" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "venv").exists()


def test_a_missing_interpreter_gets_a_message(tmp_path: Path) -> None:
    result = _run_script(tmp_path / "no-such-python", tmp_path / "venv")
    assert result.returncode == 1
    assert "no Python interpreter" in result.stderr


def _site_contents(python: Path) -> dict[str, list[str]]:
    """What every site-packages folder of ``python`` (user site included) holds."""
    code = (
        "import json, site, sysconfig\n"
        "dirs = set(site.getsitepackages()) | {site.getusersitepackages()}\n"
        "dirs |= {sysconfig.get_path('purelib'), sysconfig.get_path('platlib')}\n"
        "print(json.dumps(sorted(dirs)))"
    )
    out = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {
        folder: sorted(p.name for p in Path(folder).iterdir()) if Path(folder).is_dir() else []
        for folder in json.loads(out)
    }


def _imports_fhirbots(python: Path, scratch: Path) -> bool:
    # From a folder of its own: ``-c`` puts the working directory on sys.path, where a folder
    # named fhirbots (the clone) would import as a namespace package.
    cwd = scratch / "import-check"
    cwd.mkdir(exist_ok=True)
    result = subprocess.run(
        [str(python), "-c", "import fhirbots"],
        cwd=cwd,
        env=_stock_env(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return result.returncode == 0


def _stock_env() -> dict[str, str]:
    """This environment without what a newcomer's shell would not have: an enclosing make's
    flags, an active virtual environment, the engine's own settings (the server must be the
    embedded one, in the test's data dir)."""
    dropped = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    return {
        k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("FHIRBOTS_")
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status(url: str) -> int | None:
    """The HTTP status ``url`` answers with, or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


@pytest.fixture
def system_python() -> Path:
    if not SYSTEM_PYTHON.exists():
        message = (
            f"{SYSTEM_PYTHON} (the distribution's python3) is missing: install the python3 "
            "package to run this test"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return SYSTEM_PYTHON


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of the committed repository, as a newcomer gets it."""
    target = tmp_path / "fhirbots"
    subprocess.run(["git", "clone", "-q", str(REPO), str(target)], check=True, timeout=300)
    return target


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.mark.integration
@pytest.mark.timeout(SERVE_DEADLINE + 2 * STOP_DEADLINE + 300)
def test_make_serve_on_the_distribution_python(
    system_python: Path, clone: Path, tmp_path: Path
) -> None:
    assert not _imports_fhirbots(system_python, tmp_path), (
        f"{system_python} already imports fhirbots: this test could not tell what make installs"
    )
    before = _site_contents(system_python)
    port = _free_port()
    log_file = tmp_path / "make-serve.log"
    url = f"http://127.0.0.1:{port}/fhir/R4/metadata"
    with log_file.open("wb") as log:
        make = subprocess.Popen(
            [
                "make",
                "serve",
                f"PYTHON={system_python}",
                f"ARGS=--port {port} --data-dir {tmp_path / 'data'}",
            ],
            cwd=clone,
            env=_stock_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + SERVE_DEADLINE
        while (status := _status(url)) != 200:
            if time.monotonic() > deadline:
                pytest.fail(f"{url} answered {status} after {SERVE_DEADLINE}s:\n{_tail(log_file)}")
            try:
                code = make.wait(timeout=0.5)  # the wait between two looks, ended by an exit
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"make serve exited with {code} before {url} answered:\n{_tail(log_file)}")
    finally:
        # make and the server are one process group: stop both, as Ctrl-C in a shell would.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGTERM)
        try:
            make.wait(timeout=STOP_DEADLINE)
        finally:
            # Whatever outlived make (nothing, when the server stops cleanly) must not linger.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(make.pid, signal.SIGKILL)
            make.wait()
    assert _status(url) is None, "the server still answers after SIGTERM"

    venv_python = clone / ".venv" / "bin" / "python"
    base = subprocess.run(
        [str(venv_python), "-c", "import sys; print(sys.base_prefix)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    system_prefix = subprocess.run(
        [str(system_python), "-c", "import sys; print(sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    assert base == system_prefix, "the virtual environment is not made from PYTHON"
    assert (clone / ".venv" / "bin" / "fhirbots").exists()
    assert not _imports_fhirbots(system_python, tmp_path)
    assert _site_contents(system_python) == before, f"make installed into {system_python}"
