"""A project's subscription configuration, built from its stored resources in one pass.

Topics are parsed first, then Subscriptions against them. A resource that no longer parses
(written before a check existed, or naming a topic that was deleted since) is kept as a
:class:`Problem` and does not fire; the others are unaffected.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhirbots.subscriptions.definitions import parse_subscription, parse_topic
from fhirbots.subscriptions.errors import CriteriaError
from fhirbots.subscriptions.index import SubscriptionIndex
from fhirbots.subscriptions.model import SubscriptionSpec, Topic
from fhirbots.subscriptions.search.project import project_search

__all__ = ["Problem", "ProjectConfig", "build_config"]


@dataclass(frozen=True, slots=True)
class Problem:
    """A stored Subscription or SubscriptionTopic that cannot be evaluated."""

    reference: str
    message: str


@dataclass(frozen=True)
class ProjectConfig:
    """Everything the matcher needs about one project's subscriptions.

    Attributes:
        project: Project id.
        generation: The configuration generation it was loaded for.
        topics: Topics by canonical URL.
        subscriptions: Every parsed Subscription, whatever its status.
        problems: Resources that could not be parsed.
        index: The active subscriptions, indexed.
    """

    project: str
    generation: int
    topics: dict[str, Topic]
    subscriptions: tuple[SubscriptionSpec, ...]
    problems: tuple[Problem, ...]
    index: SubscriptionIndex

    @classmethod
    def empty(cls, project: str, generation: int = 0) -> ProjectConfig:
        """A project without subscriptions."""
        return cls(project, generation, {}, (), (), SubscriptionIndex((), {}))


def build_config(
    project: str, generation: int, resources: Iterable[dict[str, Any]]
) -> ProjectConfig:
    """Parse a project's Subscription and SubscriptionTopic resources and index them.

    Args:
        project: Project id.
        generation: The configuration generation these resources belong to.
        resources: The current (not deleted) Subscription and SubscriptionTopic resources, and
            the SearchParameter, ValueSet and CodeSystem resources their criteria may use;
            other types are ignored.
    """
    listed = list(resources)
    search = project_search(listed)
    topics: dict[str, Topic] = {}
    problems: list[Problem] = []
    for resource in listed:
        if resource.get("resourceType") != "SubscriptionTopic":
            continue
        try:
            topic = parse_topic(resource, search)
        except CriteriaError as exc:
            problems.append(Problem(f"SubscriptionTopic/{resource.get('id')}", exc.message))
            continue
        topics[topic.url] = topic
    specs: list[SubscriptionSpec] = []
    for resource in listed:
        if resource.get("resourceType") != "Subscription":
            continue
        try:
            specs.append(parse_subscription(resource, topics, search))
        except CriteriaError as exc:
            problems.append(Problem(f"Subscription/{resource.get('id')}", exc.message))
    specs.sort(key=lambda s: s.id)
    return ProjectConfig(
        project=project,
        generation=generation,
        topics=topics,
        subscriptions=tuple(specs),
        problems=tuple(problems),
        index=SubscriptionIndex(specs, topics),
    )
