"""The engine side of bots: loading, running, scheduling and recording them.

The sandbox (RestrictedPython, worker processes with limits) is :mod:`fhirbots.bots`; this
package hosts it in the engine. The HTTP operations on bots are in
:mod:`fhirbots.engine.operations.bots`.

Modules::

    runtime          BotRuntime: loads Bots, runs them, records; the dispatcher's BotInvoker
    engine_gateway   EngineFhirGateway, the engine's adapter of the port
                     :class:`fhirbots.bots.gateway.FhirGateway`: a bot's FHIR calls through
                     FhirService/SearchService
    scheduler        CronScheduler: cron schedules, one run per (bot, tick) across processes;
                     it sees the runtime only through its port BotRunner
    loaded           LoadedBot, the value the runtime and the scheduler pass around
    records          execution records (bots.executions.v1) and AuditEvents
    store            BotStore port (cron claims, async jobs); store_sqlite, store_postgres,
                     and the SQL both run, written once: store_sql
    secrets          project secrets that bots may read
    tags             meta.tag codings of a bot's writes
    errors           BotRuntimeError tree

See ``docs/bots.md``.
"""

__all__: list[str] = []
