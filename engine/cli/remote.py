"""A :class:`fhirbots.bots.gateway.FhirGateway` over a server's REST API, for ``fhirbots bot run
--url``.

A bot author runs a bot locally against a real server without deploying it: the bot's FHIR
calls become HTTP requests with the caller's key, and its writes are that key's: the tags that
say a bot wrote a version are only for the engine's own bots (the server strips them from REST
writes, see ``docs/security.md``). The causation chain cannot travel over HTTP either, so a
local run is not covered by the matcher's loop guard.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fhirbots.bots.errors import FhirGatewayError
from fhirbots.bots.gateway import CallContext
from fhirbots.engine.automation.engine_gateway import search_pairs
from fhirbots.engine.cli.client import ClientError, FhirClient

__all__ = ["HttpFhirGateway"]

_PATCH = {"Content-Type": "application/json-patch+json"}


def _path(resource_type: str, resource_id: str | None = None) -> str:
    if resource_id is None:
        return quote(resource_type, safe="")
    return f"{quote(resource_type, safe='')}/{quote(resource_id, safe='')}"


def _translated(exc: ClientError) -> FhirGatewayError:
    outcome = exc.outcome if isinstance(exc.outcome, dict) else None
    return FhirGatewayError(str(exc), status=exc.status, outcome=outcome)


class HttpFhirGateway:
    """Performs a bot's FHIR calls as HTTP requests through ``client``.

    Args:
        client: An open FHIR client (its URL and key decide where and as whom).
    """

    def __init__(self, client: FhirClient) -> None:
        self._client = client

    async def _send(
        self,
        ctx: CallContext,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        sent = dict(headers or {})
        if ctx.trace_id:
            sent["traceparent"] = ctx.trace_id
        try:
            return await self._client.request(method, path, body, headers=sent)
        except ClientError as exc:
            raise _translated(exc) from exc

    async def read(self, ctx: CallContext, resource_type: str, resource_id: str) -> dict[str, Any]:
        """``GET Type/id``."""
        found: dict[str, Any] = await self._send(ctx, "GET", _path(resource_type, resource_id))
        return found

    async def create(self, ctx: CallContext, resource: dict[str, Any]) -> dict[str, Any]:
        """``POST Type``."""
        created: dict[str, Any] = await self._send(
            ctx, "POST", _path(str(resource.get("resourceType"))), resource
        )
        return created

    async def update(self, ctx: CallContext, resource: dict[str, Any]) -> dict[str, Any]:
        """``PUT Type/id``."""
        resource_id = resource.get("id")
        if not isinstance(resource_id, str) or not resource_id:
            raise FhirGatewayError("update needs the resource's id", code="invalid")
        path = _path(str(resource.get("resourceType")), resource_id)
        updated: dict[str, Any] = await self._send(ctx, "PUT", path, resource)
        return updated

    async def patch(
        self, ctx: CallContext, resource_type: str, resource_id: str, patch: list[Any]
    ) -> dict[str, Any]:
        """``PATCH Type/id`` with a JSON Patch."""
        patched: dict[str, Any] = await self._send(
            ctx, "PATCH", _path(resource_type, resource_id), patch, _PATCH
        )
        return patched

    async def delete(self, ctx: CallContext, resource_type: str, resource_id: str) -> None:
        """``DELETE Type/id``."""
        await self._send(ctx, "DELETE", _path(resource_type, resource_id))

    async def search(
        self, ctx: CallContext, resource_type: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """``GET Type?params``."""
        query = urlencode(search_pairs(params))
        bundle: dict[str, Any] = await self._send(ctx, "GET", f"{_path(resource_type)}?{query}")
        return bundle

    async def transaction(self, ctx: CallContext, bundle: dict[str, Any]) -> dict[str, Any]:
        """``POST`` the Bundle to the base URL."""
        response: dict[str, Any] = await self._send(ctx, "POST", "", bundle)
        return response
