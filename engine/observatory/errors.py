"""Errors of the observatory store.

    FhirbotsError                 fhirbots.schemas.errors: the root of every fhirbots error
    └── ObservatoryStoreError     the observatory store failed (a database error, chained as
                                  the cause, or the store is not open)

Driver errors (``sqlite3.Error``, asyncpg's) are translated at the adapters' boundary with
``raise ... from exc``, so the statistics stage and the dashboard handle one type.
"""

from __future__ import annotations

from fhirbots.schemas.errors import FhirbotsError

__all__ = ["ObservatoryStoreError"]


class ObservatoryStoreError(FhirbotsError):
    """The observatory store failed; the cause is chained."""
