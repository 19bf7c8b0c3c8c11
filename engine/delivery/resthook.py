"""The rest-hook channel: one HTTP POST per notification.

Headers: the channel's own ``header`` lines, a W3C ``traceparent`` continuing the change's
trace, the event number, the notification id (an idempotency key), and with a secret an
``X-Signature`` (hex HMAC-SHA256 of the exact body); channel lines naming a hop-by-hop or
engine-owned header are dropped (:mod:`fhirbots.engine.delivery.channels`). Redirects are not
followed: an endpoint must answer itself (a redirect could point inside the network the guard
protects). Names are resolved through the guard (:class:`GuardedResolver`), so the address
connected to is the address checked.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

import aiohttp

from fhirbots.engine.delivery.attempt import AttemptResult
from fhirbots.engine.delivery.channels import allowed_header_lines
from fhirbots.engine.delivery.errors import EndpointRefused
from fhirbots.engine.delivery.policy import DeliveryPolicy
from fhirbots.engine.delivery.safety import EndpointGuard, GuardedResolver
from fhirbots.schemas.deliveries import RESPONSE_EXCERPT_CHARS

__all__ = [
    "HEADER_EVENT_NUMBER",
    "HEADER_NOTIFICATION_ID",
    "HEADER_SIGNATURE",
    "HEADER_SUBSCRIPTION",
    "RestHookChannel",
    "sign",
]

HEADER_SIGNATURE = "X-Signature"
"""Hex HMAC-SHA256 of the body with the subscription's secret (Medplum's header name)."""
HEADER_EVENT_NUMBER = "X-Event-Number"
"""The notification's event number in its subscription."""
HEADER_SUBSCRIPTION = "X-Subscription-Id"
"""Id of the subscription the notification belongs to."""
HEADER_NOTIFICATION_ID = "X-Notification-Id"
"""Stable id of the notification: a receiver deduplicates retries by it."""

MAX_ERROR_BODY = 500
"""Characters of an error response kept in the dead letter."""


def sign(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``body`` keyed with ``secret``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _header_lines(lines: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in allowed_header_lines(lines):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


class RestHookChannel:
    """Sends notifications with one shared HTTP client session.

    Args:
        guard: Refuses endpoints on non-public addresses.
        user_agent: The ``User-Agent`` of requests.
    """

    def __init__(self, guard: EndpointGuard, *, user_agent: str = "fhirbots-dispatcher") -> None:
        self._guard = guard
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, ttl_dns_cache=10, resolver=GuardedResolver(self._guard)
                )
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        url: str,
        body: bytes,
        *,
        content_type: str | None,
        policy: DeliveryPolicy,
        headers: Mapping[str, str],
    ) -> AttemptResult:
        """POST ``body`` to ``url``; the result says whether it counts as delivered."""
        started = time.perf_counter()
        try:
            await self._guard.check_url(url)
        except EndpointRefused as exc:
            return AttemptResult(False, error=str(exc), retryable=False)
        request_headers = {"User-Agent": self._user_agent, **_header_lines(policy.headers)}
        request_headers.update(headers)
        if content_type:
            request_headers["Content-Type"] = content_type
        if policy.secret:
            request_headers[HEADER_SIGNATURE] = sign(policy.secret, body)
        try:
            async with self._client().post(
                url,
                data=body,
                headers=request_headers,
                timeout=aiohttp.ClientTimeout(total=policy.timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                if status in policy.success:
                    head = await response.content.read(RESPONSE_EXCERPT_CHARS)
                    await response.release()
                    return AttemptResult(
                        True,
                        status,
                        seconds=time.perf_counter() - started,
                        excerpt=head.decode(errors="replace") or None,
                    )
                text = (await response.text(errors="replace"))[:MAX_ERROR_BODY]
        except EndpointRefused as exc:  # by the resolver, at connect time
            return AttemptResult(False, error=str(exc), retryable=False)
        except TimeoutError:
            return AttemptResult(
                False,
                error=f"no response within {policy.timeout:g} s",
                seconds=time.perf_counter() - started,
            )
        except (aiohttp.ClientError, OSError) as exc:
            return AttemptResult(
                False,
                error=f"{type(exc).__name__}: {exc}",
                seconds=time.perf_counter() - started,
            )
        return AttemptResult(
            False,
            status,
            error=f"HTTP {status}: {text}" if text else f"HTTP {status}",
            seconds=time.perf_counter() - started,
            excerpt=text or None,
        )
