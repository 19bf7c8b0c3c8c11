"""Bots inside the engine: the Bot resource type, deploy, execute, triggers and records.

Modules::

    api          Bot write check, $deploy, $execute, async job status (HTTP)
    runtime      BotRuntime: loads Bots, runs them, records; the dispatcher's BotInvoker
    gateway      EngineFhirGateway: a bot's FHIR calls through FhirService/SearchService
    remote       HttpFhirGateway: the same calls against a server's REST API (CLI ``bot run``)
    scheduler    CronScheduler: cron schedules, one run per (bot, tick) across processes
    records      execution records (bots.executions.v1) and AuditEvents
    store        BotStore port (cron claims, async jobs); store_sqlite, store_postgres
    secrets      project secrets that bots may read
    tags         meta.tag codings of a bot's writes
    errors       BotRuntimeError tree

The sandbox itself lives in the top-level :mod:`bots` package; see ``docs/bots.md``.
"""

__all__: list[str] = []
