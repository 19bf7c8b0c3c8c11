"""The engine's exception tree. Every error a client sees is one of these, rendered once as an
OperationOutcome by :mod:`fhirbots.engine.fhir.outcome`.

Under :class:`fhirbots.schemas.errors.FhirbotsError`::

    FhirError                      (500, base)
    ├── BadRequest                 (400) malformed JSON, bad parameters, bad Bundle
    ├── Unauthorized               (401) no or unknown API key
    ├── Forbidden                  (403) the key's project may not do this
    ├── NotFound                   (404) unknown type or resource
    ├── MethodNotAllowed           (405)
    ├── Conflict                   (409) e.g. a conditional create matching several resources
    ├── Gone                       (410) the resource was deleted
    ├── PreconditionFailed         (412) If-Match does not name the current version
    ├── UnsupportedMediaType       (415)
    ├── DeadlinePassed             (408) a write's deadline passed before it committed
    ├── Unprocessable              (422) a resource that does not validate
    ├── DatastoreUnavailable       (503) the database cannot be reached or failed a statement
    │   └── WriterStopped          (storage.sqlite) the SQLite writer process is gone
    └── IncompatibleSchema         (500, storage.sql) the database has another schema version

Foreign errors (database drivers, pydantic) are translated at the boundary with
``raise ... from exc``, and so are the errors of the other packages a client can cause
(``SearchError`` -> ``BadRequest``, ``CriteriaError`` and ``ResourceInvalid`` ->
``Unprocessable``). The engine's other parts have trees of their own, each a root under
``FhirbotsError``: ``eventlog.errors``, ``delivery.errors``, ``automation.errors``,
``observatory.errors`` and ``cli.client.ClientError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fhirbots.schemas.errors import FhirbotsError

__all__ = [
    "BadRequest",
    "Conflict",
    "DatastoreUnavailable",
    "DeadlinePassed",
    "FhirError",
    "Forbidden",
    "Gone",
    "Issue",
    "MethodNotAllowed",
    "NotFound",
    "PreconditionFailed",
    "Unauthorized",
    "Unprocessable",
    "UnsupportedMediaType",
]


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome issue."""

    diagnostics: str
    code: str = "processing"
    severity: str = "error"
    expression: tuple[str, ...] = field(default=())


class FhirError(FhirbotsError):
    """Base of every error the engine reports to a client."""

    status = 500
    code = "exception"

    def __init__(self, message: str, *, issues: tuple[Issue, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.issues = issues or (Issue(message, code=self.code),)

    def located(self, where: str) -> FhirError:
        """This error with ``where`` (e.g. ``Bundle.entry[3]``) before each message."""
        self.message = f"{where}: {self.message}"
        self.issues = tuple(
            replace(i, diagnostics=f"{where}: {i.diagnostics}") for i in self.issues
        )
        return self


class BadRequest(FhirError):
    status = 400
    code = "invalid"


class Unauthorized(FhirError):
    status = 401
    code = "login"


class Forbidden(FhirError):
    status = 403
    code = "forbidden"


class NotFound(FhirError):
    status = 404
    code = "not-found"


class MethodNotAllowed(FhirError):
    status = 405
    code = "not-supported"


class Conflict(FhirError):
    status = 409
    code = "conflict"


class Gone(FhirError):
    status = 410
    code = "deleted"


class PreconditionFailed(FhirError):
    status = 412
    code = "conflict"


class UnsupportedMediaType(FhirError):
    status = 415
    code = "not-supported"


class DeadlinePassed(FhirError):
    """The deadline of a write (a bot execution's timeout) passed before it committed: it was
    rolled back, nothing of it is stored."""

    status = 408
    code = "timeout"


class Unprocessable(FhirError):
    status = 422
    code = "invalid"


class DatastoreUnavailable(FhirError):
    """The datastore's database cannot be reached, dropped the connection or failed a statement.

    Each storage adapter raises it for every driver error that has no more specific meaning, the
    driver's error chained; the request may succeed once the database is back.
    """

    status = 503
    code = "transient"
