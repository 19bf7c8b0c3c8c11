"""FHIR R4 search semantics shared by the datastore and the subscription matcher.

Parse a search string into a typed query (:func:`parse_search`), evaluate it against one
resource in memory (:func:`matches`), or compute the index entries a resource contributes
(:func:`resource_entries`, used by the SQL index in ``engine.storage.search_index``).
"""

from subscriptions.search.entries import entries_for, resource_entries
from subscriptions.search.errors import (
    InvalidValueError,
    NotSupportedInMemoryError,
    SearchError,
    SearchParseError,
    UnknownModifierError,
    UnknownParameterError,
    UnsupportedSearchError,
)
from subscriptions.search.matcher import check_in_memory, matches
from subscriptions.search.parser import ParseResult, parse_params, parse_search
from subscriptions.search.query import SearchQuery
from subscriptions.search.registry import Registry, SearchParamDef, default_registry

__all__ = [
    "InvalidValueError",
    "NotSupportedInMemoryError",
    "ParseResult",
    "Registry",
    "SearchError",
    "SearchParamDef",
    "SearchParseError",
    "SearchQuery",
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
