"""A small FHIR client for the CLI's client commands (``load`` and later ones).

It talks to the server named by ``--url`` or ``FHIRBOTS_URL`` with the key in
``FHIRBOTS_TOKEN``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from fhirbots.engine.settings import Settings
from fhirbots.schemas.errors import FhirbotsError

__all__ = ["DEFAULT_URL", "UNREACHABLE", "ClientError", "FhirClient", "client_settings"]

DEFAULT_URL = Settings().base_url()
"""Where ``fhirbots serve`` listens by default."""


UNREACHABLE = 503
"""``ClientError.status`` when no answer came (refused, reset, timed out): what a gateway in
front of the server would answer, and what callers already treat as "try again later"."""


class ClientError(FhirbotsError):
    """The server answered with an error, or could not be reached (:data:`UNREACHABLE`);
    ``outcome`` is its OperationOutcome when it sent one. The root of the CLI client's errors,
    under :class:`fhirbots.schemas.errors.FhirbotsError`; aiohttp's errors and answers that
    are not JSON are translated into it."""

    def __init__(self, status: int, message: str, outcome: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.outcome = outcome


@dataclass(frozen=True)
class ClientSettings:
    """Where the server is and which key to use."""

    url: str
    token: str | None


def client_settings(url: str | None, environ: Mapping[str, str] | None = None) -> ClientSettings:
    """``--url`` over ``FHIRBOTS_URL`` over the default; the key from ``FHIRBOTS_TOKEN``."""
    env = os.environ if environ is None else environ
    return ClientSettings(
        url=(url or env.get("FHIRBOTS_URL") or DEFAULT_URL).rstrip("/"),
        token=env.get("FHIRBOTS_TOKEN") or None,
    )


def _diagnostics(body: Any) -> str:
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "; ".join(str(i.get("diagnostics", i.get("code"))) for i in body.get("issue", []))
    return str(body)[:500]


class FhirClient:
    """Async FHIR JSON client (use as ``async with``)."""

    def __init__(self, settings: ClientSettings, *, timeout: float = 300.0) -> None:
        self.settings = settings
        headers = {"Accept": "application/fhir+json"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        )

    async def __aenter__(self) -> FhirClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._session.close()

    async def request(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> Any:
        """Send a request to ``url/path``; returns the parsed JSON body (None when empty)."""
        data = orjson.dumps(body) if body is not None else None
        send_headers = {"Content-Type": "application/fhir+json", **(headers or {})}
        url = f"{self.settings.url}/{path.lstrip('/')}" if path else self.settings.url
        try:
            async with self._session.request(method, url, data=data, headers=send_headers) as resp:
                status, raw = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientError(UNREACHABLE, f"{method} {url}: {exc!r}") from exc
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError as exc:
            raise ClientError(status, f"{method} {url}: not JSON: {raw[:200]!r}") from exc
        if status >= 400:
            raise ClientError(status, _diagnostics(parsed), parsed)
        return parsed
