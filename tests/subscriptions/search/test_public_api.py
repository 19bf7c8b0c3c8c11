"""The public surface of ``fhirbots.subscriptions.search`` is what it should be."""

from __future__ import annotations

import fhirbots.subscriptions.search as search

EXPECTED = {
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
}


def test_exports() -> None:
    assert set(search.__all__) == EXPECTED
    assert all(hasattr(search, name) for name in EXPECTED)


def test_errors_share_one_root() -> None:
    for name in EXPECTED:
        member = getattr(search, name)
        if isinstance(member, type) and issubclass(member, Exception):
            assert issubclass(member, search.SearchError)
