"""Chaos benchmark: the distributed mode under faults, with its figures.

Runs the scenario of ``tests/integration/test_chaos.py`` (see ``tests/integration/chaos/``):
two API processes, two workers of each role, PostgreSQL and a KRaft broker, each on a network
namespace of its own, a steady load of Patient creates matched by a rest-hook and a bot
subscription; in turn ``kill -9`` of one process of each role, a broker restart, a PostgreSQL
restart and a dispatcher cut off the network for 20 s. It prints writes sent, acknowledged and
stored, deliveries and bot runs with their duplicates, and per fault the outage and the time
until the pipeline caught up; it exits 1 if a check failed (a lost write or notification, a
reused event number, a fault not recovered from in time).

    sudo python bench/chaos.py [--rate 5]

Needs root on Linux (``ip netns``), Debian's PostgreSQL 15 server binaries and the Kafka jars
(``deploy/kafka/broker.sh fetch``). Without root it says so and exits 0 (``make bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.chaos.scenario import run_chaos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5.0, help="writes a second (default 5)")
    args = parser.parse_args()
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        print("chaos: skipped, network namespaces need root on Linux")
        return
    report = asyncio.run(run_chaos(args.rate))
    print(report.render())
    sys.exit(1 if report.violations else 0)


if __name__ == "__main__":
    main()
