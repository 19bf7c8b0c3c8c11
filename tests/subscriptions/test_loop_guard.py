"""Loop guard policy."""

from __future__ import annotations

from fhirbots.schemas.events import CausationLink
from fhirbots.subscriptions.loop_guard import DEFAULT_MAX_DEPTH, LoopGuardPolicy


def test_counts_only_the_bot_in_question() -> None:
    links = [CausationLink(bot=b, execution="e") for b in ["Bot/a", "Bot/b", "Bot/a"]]
    policy = LoopGuardPolicy(max_depth=1)
    assert policy.occurrences("Bot/a", links) == 2
    assert not policy.allows("Bot/a", links)
    assert policy.allows("Bot/b", links)
    assert policy.allows("Bot/c", links)


def test_defaults_and_copy() -> None:
    assert LoopGuardPolicy().max_depth == DEFAULT_MAX_DEPTH == 5
    assert LoopGuardPolicy().with_max_depth(2) == LoopGuardPolicy(max_depth=2)
