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

__all__ = ["DEFAULT_URL", "ClientError", "FhirClient", "client_settings"]

DEFAULT_URL = Settings().base_url()
"""Where ``fhirbots serve`` listens by default."""


class ClientError(Exception):
    """The server answered with an error; ``outcome`` is its OperationOutcome when it sent one."""

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
        async with self._session.request(method, url, data=data, headers=send_headers) as resp:
            raw = await resp.read()
            parsed = orjson.loads(raw) if raw else None
            if resp.status >= 400:
                raise ClientError(resp.status, _diagnostics(parsed), parsed)
            return parsed
