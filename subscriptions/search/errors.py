"""Errors of the FHIR search layer.

Tree (under :class:`fhirbots.schemas.errors.FhirbotsError`)::

    SearchError                      root of every search failure
    ├── SearchParseError             the search string cannot be turned into a query
    │   ├── UnknownParameterError    a parameter the registry does not know
    │   ├── UnknownModifierError     a modifier the parameter type does not allow
    │   └── InvalidValueError        a malformed value (bad date, number, prefix ...)
    ├── UnsupportedSearchError       valid FHIR, but not supported here (composite, near,
    │   └── NotSupportedInMemoryError  chained and ``_has`` parameters in :func:`matches`)
    ├── MissingTerminologyError      ``:in``/``:below``/... need a ValueSet or CodeSystem the
    │                                project does not store (HTTP 422, naming it)
    └── InvalidDefinitionError       a SearchParameter resource that cannot be used (HTTP 422)

Each error carries the offending parameter name (``param``) so the REST API can turn it into an
``OperationOutcome`` whose diagnostics name what was refused.
"""

from __future__ import annotations

from fhirbots.schemas.errors import FhirbotsError

__all__ = [
    "InvalidDefinitionError",
    "InvalidValueError",
    "MissingTerminologyError",
    "NotSupportedInMemoryError",
    "SearchError",
    "SearchParseError",
    "UnknownModifierError",
    "UnknownParameterError",
    "UnsupportedSearchError",
]


class SearchError(FhirbotsError):
    """Root of all search errors.

    Attributes:
        param: The search parameter (as written in the request) the error is about, if any.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class SearchParseError(SearchError):
    """The search string cannot be parsed into a query (HTTP 400)."""


class UnknownParameterError(SearchParseError):
    """The parameter is not defined for the resource type."""


class UnknownModifierError(SearchParseError):
    """The modifier is not allowed (or not known) for the parameter's type."""


class InvalidValueError(SearchParseError):
    """The value is malformed for the parameter's type."""


class UnsupportedSearchError(SearchError):
    """The query is valid FHIR but uses a feature this implementation does not support."""


class NotSupportedInMemoryError(UnsupportedSearchError):
    """The query needs other resources (chains, ``_has``) and cannot run on one resource."""


class MissingTerminologyError(SearchError):
    """A terminology modifier needs a ValueSet or CodeSystem that is not stored (HTTP 422)."""


class InvalidDefinitionError(SearchError):
    """A SearchParameter resource the engine cannot use: an unsupported type, a bad expression,
    a code that clashes with another parameter (HTTP 422)."""
