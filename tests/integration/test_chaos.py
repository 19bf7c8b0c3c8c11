"""The distributed mode under faults: every part of it as processes on network namespaces of
their own (two API processes, two workers of each role, PostgreSQL, a Kafka broker, a rest-hook
receiver), a steady load of writes, and in turn ``kill -9`` of one process of each role, a
broker restart, a PostgreSQL restart and a worker cut off the network for 20 s. Afterwards no
acknowledged write, notification or bot run is missing, no event number names two events, and
the pipeline caught up after each fault within a bound. See tests/integration/chaos/."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from tests.integration.chaos.processes import PG_BIN
from tests.integration.chaos.scenario import run_chaos

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not sys.platform.startswith("linux") or os.geteuid() != 0,
        reason="network namespaces need root on Linux",
    ),
]

RATE = 5.0
"""Writes a second: modest, so that two cores run every process of the run beside it."""


@pytest.mark.timeout(480)
async def test_no_acknowledged_write_or_notification_is_lost_under_faults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert shutil.which("ip") and (PG_BIN / "postgres").exists(), "needs iproute2, PostgreSQL"
    report = await run_chaos(RATE)
    with capsys.disabled():
        print("\n" + report.render())
    assert report.acknowledged > 0 and report.deliveries >= report.acknowledged
    assert not report.violations, report.render()
