"""The engine assembled from its settings: storage, event log, relay, FHIR service and API.

``fhirbots serve`` and the workers build one :class:`Engine` at their entry point and start the
parts their role needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import structlog
from aiohttp import web

from fhirbots.bots.policy import SandboxPolicy
from fhirbots.engine.api.app import create_app
from fhirbots.engine.automation.runtime import BotRuntime
from fhirbots.engine.dashboard.app import MOUNT as DASHBOARD_MOUNT
from fhirbots.engine.dashboard.app import create_dashboard
from fhirbots.engine.dashboard.context import DashboardServices
from fhirbots.engine.dashboard.gate import SessionGate
from fhirbots.engine.dashboard.sessions import Sessions
from fhirbots.engine.delivery.channels import ChannelRules
from fhirbots.engine.delivery.safety import EndpointGuard
from fhirbots.engine.errors import BadRequest
from fhirbots.engine.eventlog.factory import create_event_log
from fhirbots.engine.eventlog.lag import LagSampler
from fhirbots.engine.eventlog.port import EventLog, TopicSpec
from fhirbots.engine.eventlog.security import KafkaSecurity
from fhirbots.engine.fhir.integrity import IntegrityPolicy
from fhirbots.engine.fhir.limits import RequestLimits
from fhirbots.engine.fhir.reindex import Reindexer
from fhirbots.engine.fhir.search import SearchService
from fhirbots.engine.fhir.searchset import searchset
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.fhir.validator_pool import BulkValidator
from fhirbots.engine.observability.probes import Readiness
from fhirbots.engine.observatory.factory import create_observatory_store
from fhirbots.engine.operations.admin import install as install_admin
from fhirbots.engine.operations.bots import install as install_bots
from fhirbots.engine.operations.delivery import delivery_routes
from fhirbots.engine.operations.search_parameters import install as install_search_parameters
from fhirbots.engine.operations.subscriptions import install as install_subscriptions
from fhirbots.engine.operations.validate import install as install_validate
from fhirbots.engine.settings import Settings
from fhirbots.engine.stages.dispatcher import DISPATCHER_GROUP, Dispatcher, open_dispatcher
from fhirbots.engine.stages.matcher import MATCHER_GROUP, MatcherStage, service_error_marker
from fhirbots.engine.stages.relay import OutboxRelay
from fhirbots.engine.stages.stats import STATS_GROUP, StatsStage
from fhirbots.engine.storage.factory import create_storage
from fhirbots.engine.storage.port import Storage
from fhirbots.engine.storage.search_index import SqlSearchIndexer
from fhirbots.engine.web.auth import Authenticator, generate_key, hash_key
from fhirbots.engine.web.context import Services
from fhirbots.schemas.topics import CHANGES
from fhirbots.subscriptions.loop_guard import LoopGuardPolicy

__all__ = ["DEFAULT_PROJECT", "Bootstrap", "Engine"]

DEFAULT_PROJECT = "default"
"""The project ``serve`` creates on first start."""

ADMIN_KEY_FILE = "admin-token"
"""File in the data dir holding the first admin key (mode 0600)."""

LAG_GROUPS = (MATCHER_GROUP, DISPATCHER_GROUP, STATS_GROUP)
"""Consumer groups whose lag the statistics stage samples for the dashboard."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Bootstrap:
    """What the first start created."""

    project_created: bool
    token_path: Path | None


class Engine:
    """All parts of one engine process.

    Args:
        settings: What the engine is configured with.
        storage: The datastore; the one ``settings`` name when None.
        policy: The bot sandbox policy, built at the entry point; when None, built here from
            ``settings`` (:meth:`Settings.sandbox_policy`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        storage: Storage | None = None,
        policy: SandboxPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage or create_storage(settings, indexer=SqlSearchIndexer())
        self.event_log: EventLog | None = None
        self.relay: OutboxRelay | None = None
        self.search = SearchService(self.storage, max_page_bytes=settings.max_response_bytes)
        self.validator = BulkValidator()
        self.fhir = FhirService(
            self.storage,
            on_commit=self._on_commit,
            conditional_search=self.search.find,
            validator=self.validator,
            limits=RequestLimits.from_settings(settings),
            integrity=IntegrityPolicy.from_settings(settings),
        )
        self.authenticator = Authenticator(self.storage)
        self.routes: list[web.RouteDef] = []
        """Operation routes other parts add (they are served before the generic routes)."""
        self.dispatcher: Dispatcher | None = None
        install_subscriptions(self.fhir, self.routes)
        install_validate(self.routes)
        install_admin(self.storage, self.routes)
        self.reindexer = Reindexer(self.storage)
        """Runs ``$reindex`` jobs (after SearchParameters are written)."""
        install_search_parameters(self.fhir, self.reindexer, self.routes)
        guard = EndpointGuard.from_cidrs(settings.allowed_endpoint_networks)
        self.fhir.add_write_check("Subscription", ChannelRules(guard).check)
        self.matcher: MatcherStage | None = None
        self.bots = BotRuntime.for_engine(
            settings,
            fhir=self.fhir,
            search=self.search,
            get_url=self._get_url,
            event_log=lambda: self.event_log,
            policy=policy or settings.sandbox_policy(),
        )
        """Runs Bots ($execute, ``Bot/<id>`` endpoints, cron); workers start on first use."""
        install_bots(self.bots, self.fhir, self.routes)
        self.observatory = create_observatory_store(
            settings.database_url, settings.data_dir, migrate=settings.migrates_on_start
        )
        """What the dashboard reads; the statistics stage writes it."""
        self._observatory_open = False
        self.stats: StatsStage | None = None
        self.readiness = Readiness()
        """What ``/readyz`` reports: the checks of the parts this process opened."""
        self.readiness.add("database", self._database_ready)
        self._lag: LagSampler | None = None

    async def _database_ready(self) -> str | None:
        await self.storage.find_api_key("readiness probe")  # one indexed read
        return None

    async def _event_log_ready(self) -> str | None:
        if self.event_log is None:
            return "not open"
        await self.event_log.ping()
        return None

    async def _consumers_ready(self) -> str | None:
        if self.event_log is None:
            return None
        waiting = sorted(m.group for m in self.event_log.consumers() if not m.assignment())
        return f"no partitions assigned yet: {', '.join(waiting)}" if waiting else None

    def _on_commit(self) -> None:
        if self.relay is not None:
            self.relay.notify()

    async def open(self) -> None:
        """Open the storage (creating its schema)."""
        await self.storage.open()
        self.validator.start()

    async def _open_event_log(self) -> EventLog:
        """The event log of this process, opened (and its topics created) on first use."""
        if self.event_log is None:
            self.event_log = create_event_log(
                kafka_bootstrap=self.settings.kafka,
                data_dir=self.settings.data_dir,
                topics=(TopicSpec(CHANGES),),
                security=KafkaSecurity.from_settings(self.settings),
            )
            await self.event_log.start()
            self.readiness.add("eventlog", self._event_log_ready)
            self.readiness.add("consumers", self._consumers_ready)
            self._lag = LagSampler(self.event_log)
            self._lag.start()
        return self.event_log

    async def start_relay(self) -> None:
        """Run the outbox relay in the background."""
        self.relay = OutboxRelay(self.storage, await self._open_event_log())
        self.relay.start()

    async def start_matcher(self, policy: LoopGuardPolicy | None = None) -> None:
        """Run the subscription matcher stage on the event log (opened here if needed).

        Args:
            policy: Loop guard policy (default: the depth in the settings).
        """
        event_log = await self._open_event_log()
        self.matcher = MatcherStage(
            self.storage,
            event_log,
            policy=policy or LoopGuardPolicy(max_depth=self.settings.loop_guard_depth),
            mark_error=service_error_marker(self.fhir),
        )
        await self.matcher.start(event_log)

    async def start_dispatcher(self, *, run: bool = True) -> Dispatcher:
        """Build the notification dispatcher and add its API routes (before :meth:`app`).

        With ``run`` it also delivers in this process (``serve``, ``worker dispatcher``);
        without, the API still lists and requeues dead letters, which a running dispatcher
        picks up.
        """
        event_log = await self._open_event_log()
        self.dispatcher = await open_dispatcher(
            self.settings,
            storage=self.storage,
            fhir=self.fhir,
            event_log=event_log,
            bots=self.bots,
        )
        self.routes.extend(delivery_routes(self.dispatcher, self.authenticator))
        if run:
            await self.dispatcher.start()
        return self.dispatcher

    async def open_observatory(self) -> None:
        """Open the observatory store (once; the HTTP application does it on start-up)."""
        if not self._observatory_open:
            await self.observatory.open()
            self._observatory_open = True

    async def start_stats(self) -> StatsStage:
        """Run the statistics stage in-process (``serve``; ``worker stats`` in embedded mode)."""
        event_log = await self._open_event_log()
        await self.open_observatory()
        self.stats = StatsStage(
            self.observatory, retention=self.settings.retention, lag_groups=LAG_GROUPS
        )
        await self.stats.start(event_log)
        return self.stats

    async def run_stats_app(self) -> None:
        """Run the statistics stage as a faust app until SIGTERM or SIGINT (``worker stats`` in
        Kafka mode; see :mod:`fhirbots.engine.stages.stats_faust`)."""
        # Imported only here: no other process of the engine loads faust.
        from fhirbots.engine.stages.stats_faust import StatsAppSettings, run_stats_app

        event_log = await self._open_event_log()
        await self.open_observatory()
        settings = StatsAppSettings.from_settings(self.settings, lag_groups=LAG_GROUPS)
        await run_stats_app(settings, self.observatory, event_log)

    async def start_bots(self, *, cron: bool = True) -> None:
        """Start the bot workers and, with ``cron``, the cron scheduler (``serve``,
        ``worker bots``). Records go to the event log when this process has one open."""
        await self._open_event_log()
        await self.bots.start(cron=cron)

    async def close(self) -> None:
        """Stop the stages, the event log and the stores, in that order.

        Consumers finish the batch in hand and commit it; what is not done yet (pending
        deliveries, outbox rows, uncommitted records) stays where another process or the next
        start picks it up.
        """
        self.readiness.drain()
        await self.reindexer.close()
        if self._lag is not None:
            await self._lag.stop()
            self._lag = None
        if self.stats is not None:
            await self.stats.stop()
            self.stats = None
        if self.dispatcher is not None:
            await self.dispatcher.stop()
            await self.dispatcher.store.close()
            self.dispatcher = None
        await self.bots.close()
        if self.matcher is not None:
            await self.matcher.stop()
            self.matcher = None
        if self.relay is not None:
            await self.relay.stop()
            self.relay = None
        if self.event_log is not None:
            await self.event_log.stop()
            self.event_log = None
        if self._observatory_open:
            await self.observatory.close()
            self._observatory_open = False
        await self.storage.close()
        self.validator.close()

    async def bootstrap(self) -> Bootstrap:
        """Create the default project and, the first time, an admin key in the data dir."""
        created = await self.storage.ensure_project(DEFAULT_PROJECT, "Default project")
        token_path = self.settings.data_dir / ADMIN_KEY_FILE
        if not created and token_path.exists():
            return Bootstrap(False, None)
        key = generate_key()
        await self.storage.add_api_key(DEFAULT_PROJECT, hash_key(key), name="admin", admin=True)
        token_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        os.chmod(token_path, 0o600)
        return Bootstrap(created, token_path)

    async def create_project(self, project: str, name: str) -> str:
        """Create a project and return a new admin key for it (shown once)."""
        await self.storage.ensure_project(project, name)
        key = generate_key()
        await self.storage.add_api_key(project, hash_key(key), name="admin", admin=True)
        return key

    async def _get_url(self, project: str, url: str) -> Any:
        path, _, query = url.partition("?")
        parts = path.strip("/").split("/")
        if len(parts) == 1:
            resource_type = parts[0] or None
            pairs = parse_qsl(query, keep_blank_values=True)
            result = await self.search.search(project, resource_type, pairs)
            base = (self.settings.public_url or "").rstrip("/")
            return searchset(base, f"/{resource_type}" if resource_type else "", pairs, result)
        if query or len(parts) not in (2, 4):
            raise BadRequest(f"GET {url!r} in a Bundle: expected a read, vread or search")
        if len(parts) == 2:
            return (await self.fhir.read(project, parts[0], parts[1])).content
        return (await self.fhir.vread(project, parts[0], parts[1], parts[3])).content

    def app(self) -> web.Application:
        """The HTTP application of this engine."""
        services = Services(
            settings=self.settings, fhir=self.fhir, search=self.search, get_url=self._get_url
        )
        sessions = Sessions(self.observatory, self.authenticator, self.settings.dashboard_session)
        app = create_app(
            services,
            self.authenticator,
            self.routes,
            browser=SessionGate(sessions, self.fhir),
            self_authenticating=(DASHBOARD_MOUNT, "/favicon.ico"),
            readiness=self.readiness,
        )
        dashboard = DashboardServices(
            settings=self.settings,
            sessions=sessions,
            authenticator=self.authenticator,
            observatory=self.observatory,
            fhir=self.fhir,
            search=self.search,
            event_log=lambda: self.event_log,
            bots=self.bots,
            dispatcher=lambda: self.dispatcher,
        )
        app.add_subapp(DASHBOARD_MOUNT, create_dashboard(dashboard))
        app.router.add_get("/", _to_dashboard)

        async def open_observatory(_: web.Application) -> None:
            await self.open_observatory()

        app.on_startup.append(open_observatory)
        return app


async def _to_dashboard(_: web.Request) -> web.StreamResponse:
    """``/`` is where a person lands: the dashboard (which asks them to sign in)."""
    raise web.HTTPFound(f"{DASHBOARD_MOUNT}/")
