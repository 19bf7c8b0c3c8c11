"""Reindexing: recompute the search index rows of a project's stored resources.

A SearchParameter written to a project indexes every resource written afterwards; resources
stored before it have no rows for it until they are reindexed. :class:`Reindexer` runs that as
a background job per request: the project's resources of the chosen types, in batches of
:data:`BATCH` (one transaction each), with progress (``done`` of ``total``) a client can follow
(``GET [base]/$reindex/<job>``, ``fhirbots reindex --follow``). Jobs live in the process that
runs them; the last :data:`KEEP_FINISHED` finished ones are kept for their status.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from prometheus_client import Counter

from fhirbots.engine.storage.port import Storage

__all__ = ["BATCH", "KEEP_FINISHED", "ReindexJob", "Reindexer"]

log = structlog.get_logger(__name__)

BATCH = 200
"""Resources reindexed per transaction."""

KEEP_FINISHED = 100
"""Finished jobs kept for their status."""

REINDEXED = Counter(
    "fhirbots_reindexed_resources_total", "Resources whose search index rows were recomputed"
)

JobStatus = Literal["running", "completed", "failed"]


@dataclass
class ReindexJob:
    """One reindex run and its progress.

    Attributes:
        id: The job id.
        project: The project reindexed.
        types: The resource types reindexed, in order.
        total: Resources to reindex (counted at the start).
        done: Resources reindexed so far.
        status: ``running``, ``completed`` or ``failed``.
        error: Why it failed.
    """

    id: str
    project: str
    types: tuple[str, ...]
    total: int
    done: int = 0
    status: JobStatus = "running"
    error: str | None = None
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    finished: datetime | None = None

    def to_parameters(self) -> dict[str, Any]:
        """The job as a FHIR ``Parameters`` resource."""
        parameters: list[dict[str, Any]] = [
            {"name": "job", "valueString": self.id},
            {"name": "status", "valueCode": self.status},
            {"name": "total", "valueInteger": self.total},
            {"name": "done", "valueInteger": self.done},
            *({"name": "type", "valueCode": t} for t in self.types),
            {"name": "started", "valueInstant": self.started.isoformat()},
        ]
        if self.finished is not None:
            parameters.append({"name": "finished", "valueInstant": self.finished.isoformat()})
        if self.error is not None:
            parameters.append({"name": "error", "valueString": self.error})
        return {"resourceType": "Parameters", "parameter": parameters}


class Reindexer:
    """Starts reindex jobs and answers for their progress.

    Args:
        storage: The datastore.
        batch: Resources per transaction.
    """

    def __init__(self, storage: Storage, *, batch: int = BATCH) -> None:
        self._storage = storage
        self._batch = batch
        self._jobs: dict[str, ReindexJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, project: str, types: Sequence[str]) -> ReindexJob:
        """Start reindexing ``types`` of ``project`` in the background; the job at once."""
        counts = await self._storage.count_by_type(project)
        chosen = tuple(sorted(set(types)))
        job = ReindexJob(
            id=str(uuid.uuid4()),
            project=project,
            types=chosen,
            total=sum(counts.get(t, 0) for t in chosen),
        )
        self._jobs[job.id] = job
        self._prune()
        task = asyncio.create_task(self._run(job), name=f"reindex-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("reindex started", project=project, job=job.id, types=chosen, total=job.total)
        return job

    def get(self, project: str, job_id: str) -> ReindexJob | None:
        """The job, if it is one of ``project``'s."""
        job = self._jobs.get(job_id)
        return job if job is not None and job.project == project else None

    async def close(self) -> None:
        """Cancel running jobs (they can be started again: reindexing is idempotent)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, job: ReindexJob) -> None:
        try:
            for resource_type in job.types:
                after = ""
                while True:
                    count, last = await self._storage.reindex(
                        job.project, resource_type, after, self._batch
                    )
                    if last is None:
                        break
                    job.done += count
                    REINDEXED.inc(count)
                    after = last
            job.status = "completed"
        except Exception as exc:  # the job reports its failure; the engine goes on
            job.status, job.error = "failed", str(exc)
            log.warning("reindex failed", project=job.project, job=job.id, error=str(exc))
        finally:
            job.finished = datetime.now(UTC)
        log.info("reindex finished", project=job.project, job=job.id, done=job.done)

    def _prune(self) -> None:
        finished = [j for j in self._jobs.values() if j.status != "running"]
        for job in sorted(finished, key=lambda j: j.started)[:-KEEP_FINISHED]:
            del self._jobs[job.id]
