"""Subscription endpoints: write checks for Subscription/SubscriptionTopic, and ``$explain``.

* Creating or updating a Subscription or SubscriptionTopic parses it with
  :mod:`fhirbots.subscriptions.definitions`; a criterion the engine cannot evaluate is refused with
  422 and an OperationOutcome whose issue names the element (``expression``).
* ``POST /fhir/R4/Subscription/$explain`` takes a resource, or a ``Parameters`` with
  ``resource``, optional ``previous`` and ``interaction``, and answers a ``Parameters`` with one
  ``result`` per subscription of the caller's project: would it fire, and if not, which
  criterion failed with what values.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from fhirbots.engine.errors import BadRequest, Issue, Unprocessable
from fhirbots.engine.fhir.definitions import SearchDefinitions
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.settings import API_PATH
from fhirbots.engine.stages.matcher import load_config
from fhirbots.engine.storage.port import Storage
from fhirbots.engine.web.context import principal, services
from fhirbots.engine.web.http import fhir_response, read_json
from fhirbots.schemas.events import ChangeEvent
from fhirbots.subscriptions.definitions import parse_subscription, parse_topic
from fhirbots.subscriptions.errors import CriteriaError
from fhirbots.subscriptions.explain import explain, to_parameters
from fhirbots.subscriptions.model import ALL_INTERACTIONS, Topic
from fhirbots.subscriptions.search.project import ProjectSearch

__all__ = ["EXPLAIN_PATH", "build_explain_event", "install"]

EXPLAIN_PATH = f"{API_PATH}/Subscription/$explain"

log = structlog.get_logger(__name__)


def _refuse(exc: CriteriaError) -> Unprocessable:
    expression = (exc.expression,) if exc.expression else ()
    return Unprocessable(
        exc.message, issues=(Issue(exc.message, code="not-supported", expression=expression),)
    )


async def _topics(
    storage: Storage, project: str, search: ProjectSearch | None = None
) -> dict[str, Topic]:
    topics: dict[str, Topic] = {}
    for row in await storage.current_resources(project, "SubscriptionTopic"):
        if row.content is None:
            continue
        try:
            topic = parse_topic(row.content, search)
        except CriteriaError:
            continue  # a stored topic that no longer parses cannot be subscribed to
        topics[topic.url] = topic
    return topics


def _checks(fhir: FhirService) -> None:
    definitions = SearchDefinitions(fhir.storage)

    async def check_subscription(project: str, resource: dict[str, Any]) -> None:
        search = await definitions.load(project)
        try:
            spec = parse_subscription(
                resource, await _topics(fhir.storage, project, search), search
            )
        except CriteriaError as exc:
            raise _refuse(exc) from exc
        for warning in spec.warnings:
            log.warning(
                "subscription criteria parameter ignored",
                project=project,
                subscription=resource.get("id"),
                warning=warning,
            )

    async def check_topic(project: str, resource: dict[str, Any]) -> None:
        try:
            parse_topic(resource, await definitions.load(project))
        except CriteriaError as exc:
            raise _refuse(exc) from exc

    fhir.add_write_check("Subscription", check_subscription)
    fhir.add_write_check("SubscriptionTopic", check_topic)


def build_explain_event(project: str, body: Any) -> ChangeEvent:
    """The hypothetical change ``$explain`` evaluates.

    Args:
        project: The caller's project.
        body: A resource, or ``Parameters`` with ``resource`` (omitted for a delete),
            ``previous`` and ``interaction``.

    Raises:
        BadRequest: Neither a resource nor a usable Parameters.
    """
    if not isinstance(body, dict) or "resourceType" not in body:
        raise BadRequest("$explain takes a resource or a Parameters resource")
    resource: dict[str, Any] | None = body
    previous: dict[str, Any] | None = None
    interaction: str | None = None
    if body["resourceType"] == "Parameters":
        resource = None
        for param in body.get("parameter") or []:
            name = param.get("name")
            if name == "resource":
                resource = param.get("resource")
            elif name == "previous":
                previous = param.get("resource")
            elif name == "interaction":
                interaction = param.get("valueCode") or param.get("valueString")
    if interaction is None:
        interaction = "update" if previous is not None else "create"
    if interaction not in ALL_INTERACTIONS:
        raise BadRequest(f"$explain: unknown interaction {interaction!r}")
    subject = previous if interaction == "delete" else resource
    if subject is None or not isinstance(subject, dict) or "resourceType" not in subject:
        raise BadRequest(f"$explain: a {interaction} needs a resource to test")
    return ChangeEvent(
        event_id=str(uuid.uuid4()),
        project=project,
        interaction=interaction,
        resource_type=str(subject["resourceType"]),
        resource_id=str(subject.get("id") or "explain"),
        version_id=str((subject.get("meta") or {}).get("versionId") or "0"),
        resource=None if interaction == "delete" else resource,
        previous=previous,
        time=datetime.now(UTC),
    )


async def explain_handler(request: web.Request) -> web.Response:
    """``POST /Subscription/$explain``."""
    project = principal(request).project
    event = build_explain_event(project, await read_json(request))
    config = await load_config(services(request).fhir.storage, project, 0)
    return fhir_response(to_parameters(explain(config, event)))


def install(fhir: FhirService, routes: list[web.RouteDef]) -> None:
    """Register the write checks on ``fhir`` and append the ``$explain`` route to ``routes``."""
    _checks(fhir)
    routes.append(web.post(EXPLAIN_PATH, explain_handler))
