"""The loop guard: a bot must not trigger itself (directly or through others) without end.

A change written by a bot execution carries its causation chain (the bot executions that led
to it, oldest first). A notification that would start a bot already present in the chain more
than ``max_depth`` times is not produced; it becomes a
:class:`~fhirbots.schemas.subscriptions.SuppressedNotification` record instead.

With the default depth of 5 a bot can be re-triggered by its own (or a downstream bot's)
writes five times in one chain; the sixth trigger is suppressed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fhirbots.schemas.events import CausationLink

__all__ = ["DEFAULT_MAX_DEPTH", "LoopGuardPolicy"]

DEFAULT_MAX_DEPTH = 5
"""Deep enough for real chains (a lab result -> a flag -> a task -> ...), small enough that a
runaway bot stops after a handful of executions."""


@dataclass(frozen=True)
class LoopGuardPolicy:
    """When the matcher withholds a notification to a bot.

    Attributes:
        max_depth: How often a bot may already be in a change's causation chain and still be
            triggered by it; beyond that the notification is suppressed.
    """

    max_depth: int = DEFAULT_MAX_DEPTH

    def with_max_depth(self, max_depth: int) -> LoopGuardPolicy:
        """A copy with another depth."""
        return LoopGuardPolicy(max_depth=max_depth)

    def occurrences(self, bot: str, chain: Sequence[CausationLink]) -> int:
        """How often ``bot`` (``Bot/<id>``) appears in ``chain``."""
        return sum(1 for link in chain if link.bot == bot)

    def allows(self, bot: str, chain: Sequence[CausationLink]) -> bool:
        """Whether a change with causation ``chain`` may trigger ``bot``."""
        return self.occurrences(bot, chain) <= self.max_depth
