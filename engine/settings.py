"""Settings, built once at the entry point (CLI flags over environment over defaults) and
passed down. No module reads the environment on its own."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["API_PATH", "DEFAULT_PORT", "Settings"]

DEFAULT_PORT = 8080
"""Port of ``fhirbots serve``; client commands default to it too."""

API_PATH = "/fhir/R4"
"""Path of the FHIR API on the server. FHIR servers name the FHIR version in their base URL,
so clients written for other R4 servers find it where they expect it, and an API of another
FHIR version could be served beside it. Every route and every base URL is built from this."""


def _writer_mode(value: str) -> bool:
    if value not in ("process", "thread"):
        raise ValueError(f"FHIRBOTS_SQLITE_WRITER must be 'process' or 'thread', not {value!r}")
    return value == "process"


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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by ``FHIRBOTS_*`` environment variables."""
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

    @property
    def sqlite_path(self) -> Path:
        """The embedded datastore file."""
        return self.data_dir / "fhirbots.db"
