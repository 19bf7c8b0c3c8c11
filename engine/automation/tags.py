"""The tags a bot's writes carry: which bot wrote the version, in which execution.

Every resource a bot creates or updates gets two ``meta.tag`` codings, replacing any earlier
ones of the same systems (a version names only the execution that wrote it)::

    {"system": BOT_TAG_SYSTEM, "code": "Bot/<id>"}
    {"system": EXECUTION_TAG_SYSTEM, "code": "<execution id>"}

so ``GET /Flag?_tag=https://fhirbots.dev/fhir/CodeSystem/bot|Bot/42`` finds what a bot wrote.
The change events of those writes carry the same facts in their causation chain.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["BOT_TAG_SYSTEM", "EXECUTION_TAG_SYSTEM", "bot_tags", "tag_resource"]

BOT_TAG_SYSTEM = "https://fhirbots.dev/fhir/CodeSystem/bot"
"""Tag system naming the bot (``Bot/<id>``) that wrote a version."""

EXECUTION_TAG_SYSTEM = "https://fhirbots.dev/fhir/CodeSystem/bot-execution"
"""Tag system naming the execution that wrote a version."""

_OURS = frozenset({BOT_TAG_SYSTEM, EXECUTION_TAG_SYSTEM})


def bot_tags(bot: str, execution_id: str) -> list[dict[str, str]]:
    """The two codings of one execution's writes."""
    return [
        {"system": BOT_TAG_SYSTEM, "code": bot, "display": "written by a bot"},
        {"system": EXECUTION_TAG_SYSTEM, "code": execution_id},
    ]


def tag_resource(resource: dict[str, Any], bot: str, execution_id: str) -> dict[str, Any]:
    """A copy of ``resource`` whose ``meta.tag`` names ``bot`` and ``execution_id``."""
    tagged = copy.deepcopy(resource)
    meta = tagged.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    kept = [
        t for t in meta.get("tag") or [] if not (isinstance(t, dict) and t.get("system") in _OURS)
    ]
    meta["tag"] = [*kept, *bot_tags(bot, execution_id)]
    tagged["meta"] = meta
    return tagged
