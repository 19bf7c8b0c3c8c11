"""The root of every exception fhirbots raises.

It lives in the bottom layer, ``schemas``, so that every package can derive from it
(``schemas`` <- ``subscriptions`` <- ``bots`` <- ``engine``). Each package's errors module
derives its own root from it and draws its own tree; the roots are::

    FhirbotsError                     this module: ``except FhirbotsError`` catches them all
    ├── ResourceInvalid (ValueError)  schemas.validation: a resource does not validate
    ├── SubscriptionError             subscriptions.errors: criteria and topics
    ├── SearchError                   subscriptions.search.errors: FHIR search strings
    ├── BotError                      bots.errors: deploys, the sandbox, the executor
    ├── FhirError                     engine.errors: what a client of the API is answered
    ├── EventLogError                 engine.eventlog.errors: the event log and its adapters
    ├── DeliveryError                 engine.delivery.errors: endpoints, the delivery store
    ├── BotRuntimeError               engine.automation.errors: the bot store
    ├── ObservatoryStoreError         engine.observatory.errors: the statistics store
    └── ClientError                   engine.cli.client: a server answered the CLI with an error

Errors of other libraries (database drivers, the Kafka and HTTP clients, pydantic) are
translated where they enter, into the package's own error, with ``raise ... from exc`` so the
cause stays chained. The API's errors middleware (``engine.api.app``) is the one place that
turns an error into an OperationOutcome: a :class:`fhirbots.engine.errors.FhirError` with its
status, anything else as 500. Failures of a bot's own code are values, never exceptions.
"""

from __future__ import annotations

__all__ = ["FhirbotsError"]


class FhirbotsError(Exception):
    """Root of every exception raised by fhirbots; each package derives its own root from it."""
