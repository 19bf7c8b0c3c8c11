"""Validation of many resources at once, spread over worker processes.

Validating with the fhir.resources models costs far more CPU than storing a resource, and one
Python process validates on one core. A transaction Bundle of hundreds of resources is
validated in chunks by a pool of processes (one per core), while the event loop goes on
serving other requests. Small batches stay in-process: shipping them costs more than it saves.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from fhirbots.bots.lifeline import follow_parent
from fhirbots.schemas.validation import ResourceInvalid, ValidationProblem, validate_resource

__all__ = ["BulkValidator", "Problems"]

POOL_THRESHOLD = 64
"""Batches smaller than this are validated in-process."""

WARM_TYPES = (
    "Patient",
    "Observation",
    "Encounter",
    "Condition",
    "Claim",
    "ExplanationOfBenefit",
    "Procedure",
    "Immunization",
    "DiagnosticReport",
    "MedicationRequest",
    "CarePlan",
    "Organization",
    "Practitioner",
)
"""Models each worker builds at start (building one takes a while the first time)."""

Problems = tuple[ValidationProblem, ...]
Item = tuple[Any, str | None]


def _validate_chunk(items: Sequence[Item]) -> list[Problems]:
    out: list[Problems] = []
    for resource, expected_type in items:
        try:
            validate_resource(resource, expected_type=expected_type)
        except ResourceInvalid as exc:
            out.append(tuple(exc.problems))
        else:
            out.append(())
    return out


def _start(engine_pid: int) -> None:
    """A worker's initializer: end with the engine (:mod:`fhirbots.bots.lifeline`), then build
    the models of :data:`WARM_TYPES`."""
    follow_parent(engine_pid)
    for resource_type in WARM_TYPES:
        _validate_chunk([({"resourceType": resource_type}, None)])


class BulkValidator:
    """Validates batches of resources, in a process pool when they are large."""

    def __init__(self, processes: int | None = None, threshold: int = POOL_THRESHOLD) -> None:
        self._processes = processes if processes is not None else (os.cpu_count() or 1)
        self._threshold = threshold
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the worker processes (spawned, so they share no threads or sockets)."""
        if self._processes > 1 and self._pool is None:
            self._pool = ProcessPoolExecutor(
                self._processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start,
                initargs=(os.getpid(),),
            )

    def warm(self) -> list[Future[int]]:
        """Start every worker now, building its models in the background, so the first large
        batch does not pay for it (a worker takes about a second of CPU to get ready).

        Returns:
            One future per worker started, done when a worker is ready (its process id).
        """
        if self._pool is None:
            return []
        return [self._pool.submit(os.getpid) for _ in range(self._processes)]

    def close(self) -> None:
        """Stop the workers."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    async def validate_many(self, items: Sequence[Item], *, heavy: bool = False) -> list[Problems]:
        """The problems of each ``(resource, expected type)``; empty where it is valid.

        Few items are validated on the caller's thread, unless they are ``heavy`` (large
        resources take seconds to validate: never on the event loop when workers exist).
        """
        if self._pool is None or (len(items) < self._threshold and not heavy):
            return _validate_chunk(items)
        loop = asyncio.get_running_loop()
        size = -(-len(items) // self._processes)
        chunks = [list(items[i : i + size]) for i in range(0, len(items), size)]
        results = await asyncio.gather(
            *(loop.run_in_executor(self._pool, _validate_chunk, chunk) for chunk in chunks)
        )
        return [problems for chunk in results for problems in chunk]
