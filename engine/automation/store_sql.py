"""SQL shared by the bot store adapters (``?`` placeholders; PostgreSQL renumbers them with
:func:`fhirbots.engine.storage.sql.numbered`).

Both databases run every statement alike: times are ISO 8601 text in UTC, so they compare as
text in both, and results are JSON text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from fhirbots.engine.automation.store import Job
from fhirbots.engine.storage.migrations import Migration, SchemaHistory, fixed

__all__ = [
    "FINISH_JOB",
    "HISTORY",
    "INSERT_CLAIM",
    "INSERT_JOB",
    "PURGE_CLAIMS",
    "SCHEMA",
    "SELECT_JOB",
    "job_row",
    "row_to_job",
]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS bot_cron_claims (
        project TEXT NOT NULL, bot TEXT NOT NULL, tick TEXT NOT NULL,
        owner TEXT NOT NULL, claimed TEXT NOT NULL,
        PRIMARY KEY (project, bot, tick))""",
    """CREATE TABLE IF NOT EXISTS bot_jobs (
        id TEXT PRIMARY KEY, project TEXT NOT NULL, bot TEXT NOT NULL, state TEXT NOT NULL,
        result TEXT, created TEXT NOT NULL, finished TEXT)""",
)
"""Tables, created idempotently on open."""

HISTORY = SchemaHistory(
    "bots",
    (Migration(1, "cron claims and bot jobs", fixed(SCHEMA)),),
)
"""The store's schema migrations (:mod:`fhirbots.engine.storage.migrations`); a change to a
table is a new step here, never an edit of :data:`SCHEMA`."""

INSERT_CLAIM = (
    "INSERT INTO bot_cron_claims (project, bot, tick, owner, claimed) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)
"""A claim of one tick: the primary key lets exactly one insert per ``(project, bot, tick)``
change a row, however many processes race for it."""

PURGE_CLAIMS = "DELETE FROM bot_cron_claims WHERE tick < ?"

INSERT_JOB = (
    "INSERT INTO bot_jobs (id, project, bot, state, result, created) VALUES (?, ?, ?, ?, ?, ?)"
)
"""Arguments: :func:`job_row`."""

FINISH_JOB = "UPDATE bot_jobs SET state = 'done', result = ?, finished = ? WHERE id = ?"

SELECT_JOB = (
    "SELECT id, project, bot, state, result, created FROM bot_jobs WHERE id = ? AND project = ?"
)
"""Read by :func:`row_to_job`."""


def job_row(job: Job) -> tuple[object, ...]:
    """The arguments of :data:`INSERT_JOB` for ``job``."""
    result = orjson.dumps(job.result).decode() if job.result is not None else None
    return (job.id, job.project, job.bot, job.state, result, job.created.isoformat())


def row_to_job(row: Any) -> Job:
    """A :class:`Job` from a row of :data:`SELECT_JOB`."""
    return Job(
        id=row[0],
        project=row[1],
        bot=row[2],
        state=row[3],
        result=orjson.loads(row[4]) if row[4] else None,
        created=datetime.fromisoformat(row[5]),
    )
