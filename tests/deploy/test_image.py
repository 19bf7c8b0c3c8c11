"""The image's steps (deploy/docker/Dockerfile), performed outside a container by
deploy/docker/verify.sh: wheels built from the build context, installed into a fresh virtual
environment, ``fhirbots serve`` started as the image starts it, its HEALTHCHECK polled until it
passes, and a SIGTERM that stops it with exit status 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

VERIFY = REPO_ROOT / "deploy" / "docker" / "verify.sh"


@pytest.mark.integration
@pytest.mark.timeout(900)  # wheels of every dependency, from pip's cache or PyPI
def test_the_image_steps_build_install_serve_and_stop() -> None:
    done = subprocess.run(
        ["bash", str(VERIFY)],
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    sys.stderr.write(done.stderr[-4000:])
    assert done.returncode == 0, done.stderr[-2000:]
    if os.geteuid() == 0:  # as root, it serves as the image's non-root user
        assert "running as uid 10001" in done.stderr
    assert "ready: the healthcheck passed" in done.stderr
    assert "fhirbots serving http://127.0.0.1:" in done.stdout
    assert "OK: built, installed, served, ready, stopped with exit status 0" in done.stderr
