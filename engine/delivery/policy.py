"""Per-subscription delivery policy, read from the Subscription resource once and cached.

The defaults come from :class:`fhirbots.engine.settings.Settings`; a Subscription overrides them
with extensions (Medplum's URLs are accepted, so Subscriptions written for Medplum work unchanged):

* attempts: ``https://medplum.com/fhir/StructureDefinition/subscription-max-attempts``
  (valueInteger);
* success codes: ``https://medplum.com/fhir/StructureDefinition/subscription-success-codes``
  (valueString such as ``200-399,404``);
* HMAC secret: ``https://www.medplum.com/fhir/StructureDefinition/subscription-secret``
  (valueString);
* audit of attempts: :data:`AUDIT_URL` (valueCode ``always``, ``never`` or ``on-failure``);
* request timeout: :data:`TIMEOUT_URL` or the Backport IG's ``backport-timeout`` (seconds);
* heartbeat: the Backport IG's ``backport-heartbeat-period`` (seconds, on ``channel``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "AUDIT_URL",
    "BACKPORT_HEARTBEAT_URL",
    "BACKPORT_TIMEOUT_URL",
    "MAX_ATTEMPTS_URLS",
    "SECRET_URLS",
    "SUCCESS_CODES_URLS",
    "TIMEOUT_URL",
    "AuditMode",
    "Backoff",
    "DeliveryDefaults",
    "DeliveryPolicy",
    "SuccessCodes",
    "policy_for",
]

MAX_ATTEMPTS_URLS = (
    "https://medplum.com/fhir/StructureDefinition/subscription-max-attempts",
    "https://fhirbots.dev/fhir/StructureDefinition/subscription-max-attempts",
)
"""Extensions giving the number of attempts per notification."""

SUCCESS_CODES_URLS = (
    "https://medplum.com/fhir/StructureDefinition/subscription-success-codes",
    "https://fhirbots.dev/fhir/StructureDefinition/subscription-success-codes",
)
"""Extensions listing the HTTP statuses that count as delivered."""

SECRET_URLS = (
    "https://www.medplum.com/fhir/StructureDefinition/subscription-secret",
    "https://medplum.com/fhir/StructureDefinition/subscription-secret",
    "https://fhirbots.dev/fhir/StructureDefinition/subscription-secret",
)
"""Extensions holding the HMAC-SHA256 secret of the ``X-Signature`` header."""

AUDIT_URL = "https://fhirbots.dev/fhir/StructureDefinition/subscription-audit-event"
"""Extension (valueCode): when to record an AuditEvent per attempt."""

TIMEOUT_URL = "https://fhirbots.dev/fhir/StructureDefinition/subscription-timeout"
"""Extension (valueDecimal/valueInteger, seconds): the request timeout."""

BACKPORT_TIMEOUT_URL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-timeout"
)
"""Backport IG: channel timeout in seconds (valueUnsignedInt)."""

BACKPORT_HEARTBEAT_URL = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-heartbeat-period"
)
"""Backport IG: heartbeat period in seconds (valueUnsignedInt)."""

MAX_ATTEMPTS_CEILING = 30
"""Upper bound of attempts a Subscription may ask for: with the back-off cap this is hours of
retrying, beyond which a dead letter (replayable) is the better place for the notification."""

AuditMode = Literal["always", "never", "on-failure"]
"""When an AuditEvent is written per delivery attempt."""


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with full jitter and a cap.

    Attributes:
        initial: Seconds before the first retry (before jitter).
        maximum: Ceiling of the delay in seconds.
        jitter: Fraction of the delay that is randomised (0 none, 1 full jitter); spreads
            retries of many subscriptions hit by one outage so they do not storm together.
    """

    initial: float = 1.0
    maximum: float = 300.0
    jitter: float = 0.5

    def delay(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after ``failed_attempts`` (1-based) failed attempts."""
        base = min(self.initial * (2 ** max(failed_attempts - 1, 0)), self.maximum)
        spread = base * self.jitter
        draw = rng.random() if rng is not None else random.random()
        return float(max(0.0, base - spread + draw * spread))


@dataclass(frozen=True)
class SuccessCodes:
    """HTTP statuses that count as delivered (2xx unless a Subscription says otherwise).

    Attributes:
        ranges: Inclusive (low, high) ranges.
    """

    ranges: tuple[tuple[int, int], ...] = ((200, 299),)

    @classmethod
    def parse(cls, text: str) -> SuccessCodes:
        """Parse ``200-399,404`` (ranges and single codes, comma-separated).

        Raises:
            ValueError: A part is not a code or a range of codes.
        """
        ranges: list[tuple[int, int]] = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            low, sep, high = part.partition("-")
            start = int(low)
            end = int(high) if sep else start
            if not (100 <= start <= end <= 599):
                raise ValueError(f"bad status range {part!r}")
            ranges.append((start, end))
        if not ranges:
            raise ValueError(f"no status codes in {text!r}")
        return cls(tuple(ranges))

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and any(lo <= status <= hi for lo, hi in self.ranges)


@dataclass(frozen=True)
class DeliveryDefaults:
    """Engine-wide delivery settings (built from :class:`fhirbots.engine.settings.Settings`).

    Attributes:
        timeout: Seconds a request may take.
        max_attempts: Attempts per notification when the Subscription sets none.
        auto_disable_after: Consecutive dead-lettered notifications before a subscription is
            switched ``off`` (0 never).
        backoff: Delays between attempts.
        allowed_networks: CIDR blocks of non-public addresses endpoints may resolve to.
        max_concurrency: Requests in flight across all subscriptions.
        audit: When to write an AuditEvent per attempt if the Subscription does not say.
        retention_days: Delivered and discarded notifications are kept this long for
            ``$events`` and ``$resend``; pending and dead ones are kept until handled.
    """

    timeout: float = 10.0
    max_attempts: int = 5
    auto_disable_after: int = 10
    backoff: Backoff = field(default_factory=Backoff)
    allowed_networks: tuple[str, ...] = ()
    max_concurrency: int = 256
    audit: AuditMode = "never"
    retention_days: float = 7.0

    def with_changes(self, **changes: Any) -> DeliveryDefaults:
        """A copy with some fields changed."""
        return replace(self, **changes)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How one subscription's notifications are delivered.

    Attributes:
        max_attempts: Attempts per notification before it becomes a dead letter.
        timeout: Seconds per request.
        success: Statuses that count as delivered.
        secret: HMAC-SHA256 key of the ``X-Signature`` header, if any.
        audit: When an AuditEvent is written per attempt.
        heartbeat_period: Seconds between heartbeats (topic-based rest-hook), if any.
        headers: ``Name: value`` lines from ``channel.header``.
    """

    max_attempts: int = 5
    timeout: float = 10.0
    success: SuccessCodes = field(default_factory=SuccessCodes)
    secret: str | None = None
    audit: AuditMode = "never"
    heartbeat_period: float | None = None
    headers: tuple[str, ...] = ()


def _extensions(element: Mapping[str, Any] | None) -> Iterable[Mapping[str, Any]]:
    if not element:
        return ()
    found = element.get("extension") or ()
    return [e for e in found if isinstance(e, Mapping)]


def _value(extensions: Iterable[Mapping[str, Any]], urls: Iterable[str]) -> Any:
    wanted = set(urls)
    for ext in extensions:
        if ext.get("url") in wanted:
            for key, value in ext.items():
                if key.startswith("value"):
                    return value
    return None


def policy_for(subscription: Mapping[str, Any], defaults: DeliveryDefaults) -> DeliveryPolicy:
    """The delivery policy of a Subscription resource (bad extension values are ignored)."""
    channel = subscription.get("channel") or {}
    exts = [*_extensions(subscription), *_extensions(channel)]
    attempts = _value(exts, MAX_ATTEMPTS_URLS)
    max_attempts = defaults.max_attempts
    if isinstance(attempts, int) and attempts >= 1:
        max_attempts = min(attempts, MAX_ATTEMPTS_CEILING)
    success = SuccessCodes()
    codes = _value(exts, SUCCESS_CODES_URLS)
    if isinstance(codes, str):
        try:
            success = SuccessCodes.parse(codes)
        except ValueError:
            success = SuccessCodes()
    secret = _value(exts, SECRET_URLS)
    audit = _value(exts, (AUDIT_URL,))
    timeout = _value(exts, (TIMEOUT_URL, BACKPORT_TIMEOUT_URL))
    heartbeat = _value(exts, (BACKPORT_HEARTBEAT_URL,))
    headers = channel.get("header") or ()
    return DeliveryPolicy(
        max_attempts=max_attempts,
        timeout=float(timeout)
        if isinstance(timeout, int | float) and timeout > 0
        else defaults.timeout,
        success=success,
        secret=secret if isinstance(secret, str) and secret else None,
        audit=audit if audit in ("always", "never", "on-failure") else defaults.audit,
        heartbeat_period=float(heartbeat)
        if isinstance(heartbeat, int | float) and heartbeat > 0
        else None,
        headers=tuple(h for h in headers if isinstance(h, str)),
    )
