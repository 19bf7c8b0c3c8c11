"""FHIR R4 search semantics shared by the datastore and the subscription matcher.

Parse a search string into a typed query (:func:`parse_search`), evaluate it against one
resource in memory (:func:`matches`), or compute the index entries a resource contributes
(:func:`resource_entries`, used by the SQL index in ``fhirbots.engine.storage.search_index``).
"""

from fhirbots.subscriptions.search.entries import entries_for, resource_entries
from fhirbots.subscriptions.search.errors import (
    InvalidValueError,
    MissingTerminologyError,
    NotSupportedInMemoryError,
    SearchError,
    SearchParseError,
    UnknownModifierError,
    UnknownParameterError,
    UnsupportedSearchError,
)
from fhirbots.subscriptions.search.matcher import check_in_memory, matches
from fhirbots.subscriptions.search.parser import ParseResult, parse_params, parse_search
from fhirbots.subscriptions.search.query import SearchQuery
from fhirbots.subscriptions.search.registry import Registry, SearchParamDef, default_registry
from fhirbots.subscriptions.search.terminology import Terminology

__all__ = [
    "InvalidValueError",
    "MissingTerminologyError",
    "NotSupportedInMemoryError",
    "ParseResult",
    "Registry",
    "SearchError",
    "SearchParamDef",
    "SearchParseError",
    "SearchQuery",
    "Terminology",
    "UnknownModifierError",
    "UnknownParameterError",
    "UnsupportedSearchError",
    "check_in_memory",
    "default_registry",
    "entries_for",
    "matches",
    "parse_params",
    "parse_search",
    "resource_entries",
]
