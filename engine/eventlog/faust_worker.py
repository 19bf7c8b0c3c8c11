"""Command line that runs one stage as a faust worker process (Kafka mode).

Usage::

    python -m fhirbots.engine.eventlog.faust_worker --bootstrap 127.0.0.1:9092 \\
        --app-id fhirbots-matcher --data-dir data/faust --stage my.module:stage

The worker stops within seconds of SIGTERM; see :mod:`fhirbots.engine.eventlog.faust_app`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from fhirbots.engine.eventlog.errors import EventLogError
from fhirbots.engine.eventlog.faust_app import FaustSettings, Stage, run_worker
from fhirbots.engine.eventlog.port import DEFAULT_PARTITIONS

__all__ = ["StageSpecError", "load_stage", "main"]


class StageSpecError(EventLogError):
    """A ``module:attribute`` stage reference that does not name a :class:`Stage`."""


def load_stage(reference: str) -> Stage:
    """The :class:`Stage` named by ``module:attribute`` (an attribute or a factory).

    Raises:
        StageSpecError: The reference does not name a stage.
    """
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise StageSpecError(f"stage reference {reference!r} is not module:attribute")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise StageSpecError(f"cannot load stage {reference!r}: {exc}") from exc
    stage = target() if callable(target) and not isinstance(target, Stage) else target
    if not isinstance(stage, Stage):
        raise StageSpecError(f"{reference!r} is a {type(stage).__name__}, not a Stage")
    return stage


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: run one stage as a faust worker."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka host:port")
    parser.add_argument("--app-id", required=True, help="faust app id (consumer group)")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--stage", required=True, help="module:attribute of a Stage")
    parser.add_argument("--partitions", type=int, default=DEFAULT_PARTITIONS)
    parser.add_argument("--session-timeout", type=float, default=10.0, help="seconds")
    parser.add_argument("--loglevel", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel)
    settings = FaustSettings(
        app_id=args.app_id,
        bootstrap=args.bootstrap,
        data_dir=args.data_dir,
        partitions=args.partitions,
        session_timeout=timedelta(seconds=args.session_timeout),
        heartbeat_interval=timedelta(seconds=max(args.session_timeout / 6, 0.5)),
    )
    run_worker(settings, load_stage(args.stage), loglevel=args.loglevel)


if __name__ == "__main__":
    main()
