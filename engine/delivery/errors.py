"""Errors of notification delivery. One root, translated at the API boundary.

Under :class:`fhirbots.schemas.errors.FhirbotsError`::

    DeliveryError                 base of everything raised by :mod:`fhirbots.engine.delivery`
    ├── EndpointRefused           the endpoint is not allowed (scheme, address, network)
    └── DeliveryStoreError        the delivery store failed (a ``sqlite3`` or asyncpg error,
                                  chained, or the store is not open)

Failed deliveries themselves are values (:class:`fhirbots.engine.delivery.attempt.AttemptResult`),
never exceptions: an endpoint that answers 500 or times out is recorded, not raised.
"""

from __future__ import annotations

from fhirbots.schemas.errors import FhirbotsError

__all__ = ["DeliveryError", "DeliveryStoreError", "EndpointRefused"]


class DeliveryError(FhirbotsError):
    """Base of the delivery errors."""


class EndpointRefused(DeliveryError):
    """The endpoint may not be called; the message says why and how to allow it."""


class DeliveryStoreError(DeliveryError):
    """The delivery store failed; the cause is chained."""
