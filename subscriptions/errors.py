"""Errors of the subscription layer (criteria, topics, evaluation).

Tree (under :class:`fhirbots.schemas.errors.FhirbotsError`)::

    SubscriptionError          root of every subscription failure
    ├── CriteriaError          a Subscription or SubscriptionTopic names a criterion the
    │                          engine cannot evaluate (refused with 422 when written)
    └── EvaluationError        a criterion failed while evaluating one event (a FHIRPath
                               runtime error); the subscription is marked ``error``

Each error carries ``expression``: the element of the resource it is about
(``Subscription.criteria``, ``SubscriptionTopic.resourceTrigger[0].queryCriteria.current`` ...),
so the API can name it in the OperationOutcome.
"""

from __future__ import annotations

from fhirbots.schemas.errors import FhirbotsError

__all__ = ["CriteriaError", "EvaluationError", "SubscriptionError"]


class SubscriptionError(FhirbotsError):
    """Root of the subscription errors.

    Attributes:
        expression: The element the error is about (FHIRPath-like), if known.
    """

    def __init__(self, message: str, *, expression: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression


class CriteriaError(SubscriptionError):
    """A criterion that cannot be evaluated: unknown parameter, modifier, bad FHIRPath ..."""


class EvaluationError(SubscriptionError):
    """A criterion raised while evaluating one event."""
