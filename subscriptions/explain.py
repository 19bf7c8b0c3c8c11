"""``$explain``: for each subscription of a project, would it fire for this change, and why not.

Unlike the matcher, explanation looks at every subscription (whatever its status, indexed or
not) and, for one that would not fire, names the criterion that failed and the values the
resource had for it. The result renders as a FHIR ``Parameters`` resource.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirbots.schemas.events import ChangeEvent
from fhirbots.subscriptions.config import ProjectConfig
from fhirbots.subscriptions.evaluation import evaluate
from fhirbots.subscriptions.loop_guard import LoopGuardPolicy

__all__ = ["Explanation", "explain", "to_parameters"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """The answer for one subscription.

    Attributes:
        subscription: ``Subscription/<id>``.
        status: Its status (``invalid`` when it cannot be parsed at all).
        fires: Whether a notification would be produced.
        matched: The criteria that held (when it fires).
        failed: The criterion that did not hold.
        values: The resource's values for that criterion.
        error: A run-time or parse error.
        warnings: What its criteria carry that is accepted but ignored (``_sort`` ...).
    """

    subscription: str
    status: str
    fires: bool
    matched: tuple[str, ...] = ()
    failed: str | None = None
    values: tuple[str, ...] = ()
    error: str | None = None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A plain JSON object (for the CLI and logs)."""
        return {
            "subscription": self.subscription,
            "status": self.status,
            "fires": self.fires,
            "matched": list(self.matched),
            "failed": self.failed,
            "values": list(self.values),
            "error": self.error,
            "warnings": list(self.warnings),
        }


def explain(
    config: ProjectConfig, event: ChangeEvent, policy: LoopGuardPolicy | None = None
) -> list[Explanation]:
    """Explain every subscription of ``config`` for ``event``, in id order.

    Args:
        config: The project's configuration.
        event: The change (a hypothetical one is fine: ids need not exist).
        policy: Loop guard policy, so a suppression is explained too.
    """
    guard = policy or LoopGuardPolicy()
    out: list[Explanation] = []
    for spec in config.subscriptions:
        verdict = evaluate(spec, event, config.topics, explain=True)
        fires = verdict.fires
        failed, values = verdict.failed, verdict.values
        bot = spec.bot
        if fires and bot is not None and not guard.allows(bot, event.causation):
            fires = False
            failed = f"loop guard: {bot} is in the causation chain more than {guard.max_depth}x"
            values = tuple(link.bot for link in event.causation)
        out.append(
            Explanation(
                subscription=spec.reference,
                status=spec.status,
                fires=fires,
                matched=verdict.matched,
                failed=failed,
                values=values,
                error=verdict.error,
                warnings=spec.warnings,
            )
        )
    for problem in config.problems:
        if problem.reference.startswith("Subscription/"):
            out.append(Explanation(problem.reference, "invalid", False, error=problem.message))
    return out


def _part(name: str, **value: Any) -> dict[str, Any]:
    return {"name": name, **value}


def to_parameters(explanations: list[Explanation]) -> dict[str, Any]:
    """A FHIR ``Parameters`` resource: one ``result`` part per subscription."""
    parameters: list[dict[str, Any]] = []
    for item in explanations:
        parts = [
            _part("subscription", valueReference={"reference": item.subscription}),
            _part("status", valueCode=item.status),
            _part("fires", valueBoolean=item.fires),
            *(_part("matched", valueString=m) for m in item.matched),
        ]
        if item.failed is not None:
            parts.append(_part("failed", valueString=item.failed))
        parts.extend(_part("value", valueString=v) for v in item.values)
        if item.error is not None:
            parts.append(_part("error", valueString=item.error))
        parts.extend(_part("warning", valueString=w) for w in item.warnings)
        parameters.append({"name": "result", "part": parts})
    return {"resourceType": "Parameters", "parameter": parameters}
