"""Tests of the custom resources' search parameters."""

from __future__ import annotations

from fhirbots.subscriptions.search import matches, parse_search
from fhirbots.subscriptions.search.custom import CUSTOM_PARAMETERS, custom_entry


def test_custom_entry_format() -> None:
    entry = custom_entry("Bot", "owner", "reference", "Bot.owner", ("Practitioner",))
    assert entry["base"] == ["Bot"]
    assert entry["target"] == ["Practitioner"]
    assert "identifier" in entry["modifier"]
    assert all(e["expression"].startswith("Bot.") for e in CUSTOM_PARAMETERS)


def test_bots_are_searchable() -> None:
    bot = {"resourceType": "Bot", "id": "b1", "name": "Lab alert", "status": "active"}
    assert matches(parse_search("Bot?name=lab&status=active").query, bot)
    assert not matches(parse_search("Bot?status=off").query, bot)
