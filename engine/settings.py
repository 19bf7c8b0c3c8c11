"""Settings, built once at the entry point (CLI flags over environment over defaults) and
passed down. No module reads the environment on its own."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from fhirbots.bots.errors import PolicyError
from fhirbots.bots.policy import MIB, SandboxPolicy

__all__ = ["API_PATH", "DEFAULT_PORT", "Settings"]

DEFAULT_PORT = 8080
"""Port of ``fhirbots serve``; client commands default to it too."""

API_PATH = "/fhir/R4"
"""Path of the FHIR API on the server. FHIR servers name the FHIR version in their base URL,
so clients written for other R4 servers find it where they expect it, and an API of another
FHIR version could be served beside it. Every route and every base URL is built from this."""


_POLICY = SandboxPolicy()
"""The sandbox policy's own defaults: the ``bot_*`` settings start from them."""

_BOT_VARIABLES = {
    "allowed_modules": "FHIRBOTS_BOT_ALLOWED_MODULES",
    "timeout_seconds": "FHIRBOTS_BOT_TIMEOUT",
    "cpu_seconds": "FHIRBOTS_BOT_CPU_SECONDS",
    "memory_bytes": "FHIRBOTS_BOT_MEMORY_MB",
    "max_open_files": "FHIRBOTS_BOT_MAX_OPEN_FILES",
    "forbid_processes": "FHIRBOTS_BOT_FORBID_PROCESSES",
    "max_output_bytes": "FHIRBOTS_BOT_MAX_OUTPUT_BYTES",
    "max_log_bytes": "FHIRBOTS_BOT_MAX_LOG_BYTES",
    "max_source_bytes": "FHIRBOTS_BOT_MAX_SOURCE_BYTES",
    "max_fhir_calls": "FHIRBOTS_BOT_MAX_FHIR_CALLS",
    "max_message_bytes": "FHIRBOTS_BOT_MAX_MESSAGE_BYTES",
    "pool_size": "FHIRBOTS_BOT_WORKERS",
    "max_executions_per_worker": "FHIRBOTS_BOT_MAX_EXECUTIONS_PER_WORKER",
    "code_cache_size": "FHIRBOTS_BOT_CODE_CACHE_SIZE",
    "spare_workers": "FHIRBOTS_BOT_SPARE_WORKERS",
    "project_concurrency": "FHIRBOTS_BOT_PROJECT_CONCURRENCY",
    "project_queue": "FHIRBOTS_BOT_PROJECT_QUEUE",
}
"""The variable setting each :class:`SandboxPolicy` field, so that a refusal, which names the
field, also names what the operator set."""

_T = TypeVar("_T")


def _writer_mode(value: str) -> bool:
    if value not in ("process", "thread"):
        raise ValueError(f"FHIRBOTS_SQLITE_WRITER must be 'process' or 'thread', not {value!r}")
    return value == "process"


def _seconds(value: str) -> float:
    seconds = float(value)
    if not math.isfinite(seconds):
        # float() takes "inf" and "nan"; neither is a time limit.
        raise ValueError(value)
    return seconds


def _positive(value: str) -> float:
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"must be more than 0, not {value}")
    return number


def _flag(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise ValueError(value)
    return value.lower() == "true"


def _choice(*allowed: str) -> Callable[[str], str]:
    """A parser taking one of ``allowed`` (case-insensitive), as spelled there."""

    def parse(value: str) -> str:
        for option in allowed:
            if value.upper() == option.upper():
                return option
        raise ValueError(value)

    return parse


KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
"""Values of ``FHIRBOTS_KAFKA_SECURITY_PROTOCOL`` (Kafka's ``security.protocol``)."""

KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""Values of ``FHIRBOTS_KAFKA_SASL_MECHANISM``."""


def _modules(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _parsed(
    env: Mapping[str, str], name: str, parse: Callable[[str], _T], kind: str, default: _T
) -> _T:
    """``env[name]`` parsed, or ``default`` when unset or blank.

    Raises:
        ValueError: the value does not parse; the message names the variable.
    """
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ValueError(f"{name} must be {kind}, not {raw!r}") from None


_BOT_SETTINGS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    (
        "bot_allowed_modules",
        "FHIRBOTS_BOT_ALLOWED_MODULES",
        _modules,
        "a comma-separated list of module names",
    ),
    ("bot_timeout", "FHIRBOTS_BOT_TIMEOUT", _seconds, "a number of seconds"),
    ("bot_cpu_seconds", "FHIRBOTS_BOT_CPU_SECONDS", int, "a whole number"),
    ("bot_memory_mb", "FHIRBOTS_BOT_MEMORY_MB", int, "a whole number"),
    ("bot_max_output_bytes", "FHIRBOTS_BOT_MAX_OUTPUT_BYTES", int, "a whole number"),
    ("bot_max_log_bytes", "FHIRBOTS_BOT_MAX_LOG_BYTES", int, "a whole number"),
    ("bot_max_source_bytes", "FHIRBOTS_BOT_MAX_SOURCE_BYTES", int, "a whole number"),
    ("bot_max_fhir_calls", "FHIRBOTS_BOT_MAX_FHIR_CALLS", int, "a whole number"),
    ("bot_max_message_bytes", "FHIRBOTS_BOT_MAX_MESSAGE_BYTES", int, "a whole number"),
    ("bot_workers", "FHIRBOTS_BOT_WORKERS", int, "a whole number"),
    (
        "bot_max_executions_per_worker",
        "FHIRBOTS_BOT_MAX_EXECUTIONS_PER_WORKER",
        int,
        "a whole number",
    ),
    ("bot_code_cache_size", "FHIRBOTS_BOT_CODE_CACHE_SIZE", int, "a whole number"),
    ("bot_max_open_files", "FHIRBOTS_BOT_MAX_OPEN_FILES", int, "a whole number"),
    ("bot_forbid_processes", "FHIRBOTS_BOT_FORBID_PROCESSES", _flag, "true or false"),
    ("bot_spare_workers", "FHIRBOTS_BOT_SPARE_WORKERS", int, "a whole number"),
    ("bot_project_concurrency", "FHIRBOTS_BOT_PROJECT_CONCURRENCY", int, "a whole number"),
    ("bot_project_queue", "FHIRBOTS_BOT_PROJECT_QUEUE", int, "a whole number"),
)
"""Each ``bot_*`` setting: its variable, how the value parses, and what it must be (said when
it does not parse)."""


def _whole(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


_LIMIT_SETTINGS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    ("access_log", "FHIRBOTS_ACCESS_LOG", _flag, "true or false"),
    ("max_url_bytes", "FHIRBOTS_MAX_URL_BYTES", _whole, "a whole number above 0"),
    ("max_header_bytes", "FHIRBOTS_MAX_HEADER_BYTES", _whole, "a whole number above 0"),
    ("max_request_bytes", "FHIRBOTS_MAX_REQUEST_BYTES", _whole, "a whole number above 0"),
    ("max_resource_bytes", "FHIRBOTS_MAX_RESOURCE_BYTES", _whole, "a whole number above 0"),
    ("max_bundle_entries", "FHIRBOTS_MAX_BUNDLE_ENTRIES", _whole, "a whole number above 0"),
    ("max_response_bytes", "FHIRBOTS_MAX_RESPONSE_BYTES", _whole, "a whole number above 0"),
)
"""The request limits (docs/security.md): attribute, variable, parser, what it must be."""

_INTEGRITY_SETTINGS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    (
        "referential_integrity_on_write",
        "FHIRBOTS_REFERENTIAL_INTEGRITY_ON_WRITE",
        _flag,
        "true or false",
    ),
    (
        "referential_integrity_on_delete",
        "FHIRBOTS_REFERENTIAL_INTEGRITY_ON_DELETE",
        _flag,
        "true or false",
    ),
    ("cascade_delete_limit", "FHIRBOTS_CASCADE_DELETE_LIMIT", _whole, "a whole number above 0"),
)
"""Referential integrity (docs/rest.md): attribute, variable, parser, what it must be."""


_RUNNING_SETTINGS: tuple[tuple[str, str, Callable[[str], Any], str], ...] = (
    (
        "conditional_delete_multiple",
        "FHIRBOTS_CONDITIONAL_DELETE_MULTIPLE",
        _flag,
        "true or false",
    ),
    ("retention_days", "FHIRBOTS_RETENTION_DAYS", _positive, "a number of days"),
    ("dashboard_session_hours", "FHIRBOTS_DASHBOARD_SESSION_HOURS", _positive, "a number of hours"),
    ("management_port", "FHIRBOTS_MANAGEMENT_PORT", int, "a port number"),
    ("shutdown_grace_seconds", "FHIRBOTS_SHUTDOWN_GRACE_SECONDS", _positive, "a number of seconds"),
    ("auto_migrate", "FHIRBOTS_AUTO_MIGRATE", _flag, "true or false"),
    (
        "kafka_security_protocol",
        "FHIRBOTS_KAFKA_SECURITY_PROTOCOL",
        _choice(*KAFKA_SECURITY_PROTOCOLS),
        "one of " + ", ".join(KAFKA_SECURITY_PROTOCOLS),
    ),
    (
        "kafka_sasl_mechanism",
        "FHIRBOTS_KAFKA_SASL_MECHANISM",
        _choice(*KAFKA_SASL_MECHANISMS),
        "one of " + ", ".join(KAFKA_SASL_MECHANISMS),
    ),
    ("kafka_ssl_cafile", "FHIRBOTS_KAFKA_SSL_CAFILE", Path, "a path"),
    ("kafka_ssl_certfile", "FHIRBOTS_KAFKA_SSL_CERTFILE", Path, "a path"),
    ("kafka_ssl_keyfile", "FHIRBOTS_KAFKA_SSL_KEYFILE", Path, "a path"),
    ("tls_certfile", "FHIRBOTS_TLS_CERTFILE", Path, "a path"),
    ("tls_keyfile", "FHIRBOTS_TLS_KEYFILE", Path, "a path"),
)
"""The other settings read with a check (conditional delete, dashboard, running in
production): attribute, variable, parser, what it must be."""


@dataclass(frozen=True)
class Settings:
    """Everything the engine is configured with."""

    data_dir: Path = Path(".fhirbots")
    """Where the embedded engine keeps its SQLite files and the admin token."""

    host: str = "127.0.0.1"
    """Interface the HTTP API listens on."""

    port: int = DEFAULT_PORT
    """Port the HTTP API listens on."""

    database_url: str | None = None
    """PostgreSQL DSN; the embedded SQLite store when None (``FHIRBOTS_DATABASE_URL``)."""

    sqlite_writer_process: bool = True
    """Commit SQLite writes in a writer process, on another core than the API (the default);
    ``FHIRBOTS_SQLITE_WRITER=thread`` keeps them on a thread of the engine's process."""

    kafka: str | None = None
    """Kafka bootstrap servers; the embedded event log when None (``FHIRBOTS_KAFKA``)."""

    log_level: str = "INFO"
    """structlog level (``FHIRBOTS_LOG_LEVEL``)."""

    public_url: str | None = None
    """Base URL clients reach the API at, for links (``FHIRBOTS_PUBLIC_URL``); when None,
    :meth:`base_url` builds it from the request, or from ``host`` and ``port``."""

    allowed_endpoint_networks: tuple[str, ...] = ()
    """CIDR blocks of loopback/private/link-local addresses that delivery endpoints may
    resolve to (``FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS``, comma-separated); refused otherwise."""

    delivery_timeout: float = 10.0
    """Seconds a rest-hook request may take (``FHIRBOTS_DELIVERY_TIMEOUT``)."""

    delivery_max_attempts: int = 5
    """Attempts per notification when the Subscription sets none
    (``FHIRBOTS_DELIVERY_MAX_ATTEMPTS``); about 30 s of back-off with the default delays."""

    delivery_auto_disable_after: int = 10
    """Consecutive dead-lettered notifications after which a subscription is switched ``off``
    (``FHIRBOTS_DELIVERY_AUTO_DISABLE_AFTER``; 0 never)."""

    loop_guard_depth: int = 5
    """How often a bot may already be in a change's causation chain and still be triggered by
    it; deeper, the notification is suppressed (``FHIRBOTS_LOOP_GUARD_DEPTH``)."""

    conditional_delete_multiple: bool = False
    """``DELETE Type?search`` may delete every match; when False, more than one match is a 412
    (``FHIRBOTS_CONDITIONAL_DELETE_MULTIPLE``, ``true`` or ``false``)."""

    # The bot sandbox: each bot_* setting is a field of the SandboxPolicy that
    # sandbox_policy() builds, which validates them; the defaults are the policy's own.

    bot_allowed_modules: tuple[str, ...] = tuple(sorted(_POLICY.allowed_modules))
    """Every module bots may import, replacing the default list
    (``FHIRBOTS_BOT_ALLOWED_MODULES``, comma-separated; top-level names only)."""

    bot_timeout: float = _POLICY.timeout_seconds
    """Wall-clock seconds per execution, FHIR calls included; a Bot's own ``timeout`` can only
    lower it (``FHIRBOTS_BOT_TIMEOUT``)."""

    bot_cpu_seconds: int = _POLICY.cpu_seconds
    """CPU seconds per execution (``FHIRBOTS_BOT_CPU_SECONDS``)."""

    bot_memory_mb: int = _POLICY.memory_bytes // MIB
    """Address-space ceiling of a sandbox worker in MiB, interpreter included, at least 64; a
    Bot's own ``memoryLimit`` can only lower it (``FHIRBOTS_BOT_MEMORY_MB``)."""

    bot_max_output_bytes: int = _POLICY.max_output_bytes
    """Largest return value of an execution, as JSON (``FHIRBOTS_BOT_MAX_OUTPUT_BYTES``)."""

    bot_max_log_bytes: int = _POLICY.max_log_bytes
    """Captured log text per execution (``FHIRBOTS_BOT_MAX_LOG_BYTES``)."""

    bot_max_source_bytes: int = _POLICY.max_source_bytes
    """Largest bot source accepted at deploy (``FHIRBOTS_BOT_MAX_SOURCE_BYTES``)."""

    bot_max_fhir_calls: int = _POLICY.max_fhir_calls
    """FHIR calls per execution (``FHIRBOTS_BOT_MAX_FHIR_CALLS``; 0 allows none)."""

    bot_max_message_bytes: int = _POLICY.max_message_bytes
    """Largest message between the engine and a sandbox worker; must hold a whole result
    (``FHIRBOTS_BOT_MAX_MESSAGE_BYTES``)."""

    retention_days: float = 7.0
    """How long execution records, delivery records, trace steps and statistics are kept for
    the dashboard before they are purged (``FHIRBOTS_RETENTION_DAYS``)."""

    dashboard_session_hours: float = 8.0
    """How long a dashboard sign-in lasts (``FHIRBOTS_DASHBOARD_SESSION_HOURS``)."""

    bot_workers: int = _POLICY.pool_size
    """Sandbox worker processes, i.e. concurrent executions (``FHIRBOTS_BOT_WORKERS``)."""

    bot_max_executions_per_worker: int = _POLICY.max_executions_per_worker
    """Executions after which a worker is replaced
    (``FHIRBOTS_BOT_MAX_EXECUTIONS_PER_WORKER``)."""

    bot_code_cache_size: int = _POLICY.code_cache_size
    """Compiled bots each worker keeps (``FHIRBOTS_BOT_CODE_CACHE_SIZE``)."""

    bot_max_open_files: int = _POLICY.max_open_files
    """Open files per worker (``FHIRBOTS_BOT_MAX_OPEN_FILES``)."""

    bot_forbid_processes: bool = _POLICY.forbid_processes
    """Workers cannot start processes (``FHIRBOTS_BOT_FORBID_PROCESSES``, ``true`` or
    ``false``)."""

    bot_spare_workers: int = _POLICY.spare_workers
    """Clean workers kept ready for a project without a worker of its own
    (``FHIRBOTS_BOT_SPARE_WORKERS``)."""

    bot_project_concurrency: int = _POLICY.project_concurrency
    """Executions of one project at once, its share of the workers; 0 is half the workers
    (``FHIRBOTS_BOT_PROJECT_CONCURRENCY``)."""

    bot_project_queue: int = _POLICY.project_queue
    """Executions of one project waiting for its share before ``$execute`` answers 429
    (``FHIRBOTS_BOT_PROJECT_QUEUE``)."""

    # Request limits: every request is bounded, so no single one can take the server down.

    access_log: bool = True
    """One structured line per request (``FHIRBOTS_ACCESS_LOG``, ``true`` or ``false``)."""

    max_url_bytes: int = 8190
    """Longest request line, URL included (``FHIRBOTS_MAX_URL_BYTES``); longer gets a 400."""

    max_header_bytes: int = 8190
    """Longest header field (``FHIRBOTS_MAX_HEADER_BYTES``)."""

    max_request_bytes: int = 32 * MIB
    """Largest request body, after decompression (``FHIRBOTS_MAX_REQUEST_BYTES``); 413 above."""

    max_resource_bytes: int = 4 * MIB
    """Largest single resource, as JSON, alone or in a Bundle entry
    (``FHIRBOTS_MAX_RESOURCE_BYTES``); 413 above."""

    max_bundle_entries: int = 10_000
    """Most entries of a batch or transaction (``FHIRBOTS_MAX_BUNDLE_ENTRIES``); 413 above."""

    max_response_bytes: int = 64 * MIB
    """Largest response a search page or a batch may build (``FHIRBOTS_MAX_RESPONSE_BYTES``);
    a search page stops short of it, a batch over it is refused with 413."""

    # Referential integrity (docs/rest.md, "Validation on write").

    referential_integrity_on_write: bool = True
    """A reference to a local resource that does not exist is refused with 422
    (``FHIRBOTS_REFERENTIAL_INTEGRITY_ON_WRITE``, ``true`` or ``false``)."""

    referential_integrity_on_delete: bool = True
    """Deleting a resource others reference is refused with 409
    (``FHIRBOTS_REFERENTIAL_INTEGRITY_ON_DELETE``, ``true`` or ``false``)."""

    cascade_delete_limit: int = 1000
    """Most resources one ``DELETE ...?_cascade=delete`` deletes
    (``FHIRBOTS_CASCADE_DELETE_LIMIT``); a larger cascade is refused with 409."""

    # Running in production: probes, shutdown, schema, TLS, tracing (docs/operations.md).

    management_port: int | None = None
    """Port of the management server (``/livez``, ``/readyz``, ``/metrics``, unauthenticated)
    on :attr:`host`; none when None (``FHIRBOTS_MANAGEMENT_PORT``, or ``--management-port``)."""

    shutdown_grace_seconds: float = 30.0
    """How long a process may take after SIGTERM to finish the work in hand and commit
    (``FHIRBOTS_SHUTDOWN_GRACE_SECONDS``)."""

    auto_migrate: bool | None = None
    """Create or upgrade the schema when a server starts (``FHIRBOTS_AUTO_MIGRATE``); when
    None, only in embedded mode: on PostgreSQL ``fhirbots migrate`` does it."""

    kafka_security_protocol: str = "PLAINTEXT"
    """``FHIRBOTS_KAFKA_SECURITY_PROTOCOL``: one of :data:`KAFKA_SECURITY_PROTOCOLS`."""

    kafka_sasl_mechanism: str = "PLAIN"
    """``FHIRBOTS_KAFKA_SASL_MECHANISM``: one of :data:`KAFKA_SASL_MECHANISMS`."""

    kafka_sasl_username: str | None = None
    """``FHIRBOTS_KAFKA_SASL_USERNAME``."""

    kafka_sasl_password: str | None = field(default=None, repr=False)
    """``FHIRBOTS_KAFKA_SASL_PASSWORD``."""

    kafka_ssl_cafile: Path | None = None
    """CA bundle the brokers' certificates are checked against; the system's when None
    (``FHIRBOTS_KAFKA_SSL_CAFILE``)."""

    kafka_ssl_certfile: Path | None = None
    """Client certificate for mutual TLS (``FHIRBOTS_KAFKA_SSL_CERTFILE``)."""

    kafka_ssl_keyfile: Path | None = None
    """Key of :attr:`kafka_ssl_certfile` (``FHIRBOTS_KAFKA_SSL_KEYFILE``)."""

    tls_certfile: Path | None = None
    """Certificate (chain) the API serves HTTPS with; plain HTTP when None
    (``FHIRBOTS_TLS_CERTFILE``)."""

    tls_keyfile: Path | None = None
    """Key of :attr:`tls_certfile` (``FHIRBOTS_TLS_KEYFILE``)."""

    otlp_endpoint: str | None = None
    """OTLP/HTTP base URL traces are exported to (``FHIRBOTS_OTLP_ENDPOINT``, e.g.
    ``http://collector:4318``); no tracing when None."""

    @property
    def migrates_on_start(self) -> bool:
        """Whether servers create or upgrade the schema themselves (:attr:`auto_migrate`)."""
        return self.auto_migrate if self.auto_migrate is not None else not self.database_url

    @property
    def retention(self) -> timedelta:
        """:attr:`retention_days` as a duration."""
        return timedelta(days=self.retention_days)

    @property
    def dashboard_session(self) -> timedelta:
        """:attr:`dashboard_session_hours` as a duration."""
        return timedelta(hours=self.dashboard_session_hours)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by ``FHIRBOTS_*`` environment variables.

        Raises:
            ValueError: a value that does not parse (for the ``FHIRBOTS_BOT_*`` variables and
                ``FHIRBOTS_SQLITE_WRITER``, the message names the variable).
        """
        env = os.environ if environ is None else environ
        base = cls()
        return replace(
            base,
            data_dir=Path(env.get("FHIRBOTS_DATA_DIR", str(base.data_dir))),
            host=env.get("FHIRBOTS_HOST", base.host),
            port=int(env.get("FHIRBOTS_PORT", str(base.port))),
            database_url=env.get("FHIRBOTS_DATABASE_URL") or None,
            sqlite_writer_process=_writer_mode(env.get("FHIRBOTS_SQLITE_WRITER", "process")),
            kafka=env.get("FHIRBOTS_KAFKA") or None,
            log_level=env.get("FHIRBOTS_LOG_LEVEL", base.log_level),
            public_url=env.get("FHIRBOTS_PUBLIC_URL") or None,
            allowed_endpoint_networks=tuple(
                part.strip()
                for part in env.get("FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS", "").split(",")
                if part.strip()
            ),
            loop_guard_depth=int(env.get("FHIRBOTS_LOOP_GUARD_DEPTH", str(base.loop_guard_depth))),
            delivery_timeout=float(
                env.get("FHIRBOTS_DELIVERY_TIMEOUT", str(base.delivery_timeout))
            ),
            delivery_max_attempts=int(
                env.get("FHIRBOTS_DELIVERY_MAX_ATTEMPTS", str(base.delivery_max_attempts))
            ),
            delivery_auto_disable_after=int(
                env.get(
                    "FHIRBOTS_DELIVERY_AUTO_DISABLE_AFTER", str(base.delivery_auto_disable_after)
                )
            ),
            kafka_sasl_username=env.get("FHIRBOTS_KAFKA_SASL_USERNAME") or None,
            kafka_sasl_password=env.get("FHIRBOTS_KAFKA_SASL_PASSWORD") or None,
            otlp_endpoint=env.get("FHIRBOTS_OTLP_ENDPOINT") or None,
            **{
                name: _parsed(env, variable, parse, kind, getattr(base, name))
                for name, variable, parse, kind in _BOT_SETTINGS
                + _LIMIT_SETTINGS
                + _INTEGRITY_SETTINGS
                + _RUNNING_SETTINGS
            },
        )

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields changed; None values are ignored (unset CLI flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    def base_url(self, origin: str | None = None) -> str:
        """The FHIR API's base URL, as links (``fullUrl``, ``Location``, status URLs) give it.

        Args:
            origin: ``scheme://host[:port]`` of the request being answered, if any.

        Returns:
            :attr:`public_url` when set (without a trailing slash); otherwise :data:`API_PATH`
            on ``origin``, or on the address the server listens on when there is no request.
        """
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"{origin or f'http://{self.host}:{self.port}'}{API_PATH}"

    def sandbox_policy(self) -> SandboxPolicy:
        """The bot sandbox policy of these settings; built once, at the entry point.

        Raises:
            PolicyError: the policy refuses a limit; the message names the policy's field and
                the variable that sets it.
        """
        try:
            return SandboxPolicy(
                allowed_modules=frozenset(self.bot_allowed_modules),
                timeout_seconds=self.bot_timeout,
                cpu_seconds=self.bot_cpu_seconds,
                memory_bytes=self.bot_memory_mb * MIB,
                max_open_files=self.bot_max_open_files,
                forbid_processes=self.bot_forbid_processes,
                max_output_bytes=self.bot_max_output_bytes,
                max_log_bytes=self.bot_max_log_bytes,
                max_source_bytes=self.bot_max_source_bytes,
                max_fhir_calls=self.bot_max_fhir_calls,
                max_message_bytes=self.bot_max_message_bytes,
                pool_size=self.bot_workers,
                max_executions_per_worker=self.bot_max_executions_per_worker,
                code_cache_size=self.bot_code_cache_size,
                spare_workers=self.bot_spare_workers,
                project_concurrency=self.bot_project_concurrency,
                project_queue=self.bot_project_queue,
            )
        except PolicyError as exc:
            # The policy names the field(s) it refuses; an operator knows the variables.
            named = [name for field, name in _BOT_VARIABLES.items() if field in str(exc)]
            if not named:
                raise
            raise PolicyError(f"{exc} (set by {', '.join(named)})") from exc

    @property
    def sqlite_path(self) -> Path:
        """The embedded datastore file."""
        return self.data_dir / "fhirbots.db"
