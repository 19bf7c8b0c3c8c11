"""What a Subscription's channel may name: endpoints, headers and message topics, per project.

Checked when a Subscription is created or updated (:class:`ChannelRules`, a write check that
answers 422 naming the element), and again when a notification is sent, for Subscriptions
stored before a rule existed:

* an endpoint must be deliverable on its channel: ``http(s)`` for ``rest-hook`` (with a host
  in a form :meth:`~fhirbots.engine.delivery.safety.EndpointGuard.check_syntax` accepts; its
  addresses are checked at every attempt), ``ws(s)`` or none for ``websocket``, a topic
  name for ``message``, ``mailto:`` for ``email``; ``Bot/<id>`` on any channel;
* ``channel.header`` lines may not set hop-by-hop or engine-owned headers
  (:data:`FORBIDDEN_HEADERS`);
* a message topic lives in its project's namespace (:func:`message_topic`), and names the
  engine uses itself are reserved (:data:`RESERVED_TOPIC_PREFIXES`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from fhirbots.engine.delivery.errors import EndpointRefused
from fhirbots.engine.delivery.safety import EndpointGuard
from fhirbots.engine.errors import Issue, Unprocessable

__all__ = [
    "FORBIDDEN_HEADERS",
    "PROJECT_TOPIC_PREFIX",
    "RESERVED_TOPIC_PREFIXES",
    "ChannelRules",
    "allowed_header_lines",
    "header_problem",
    "message_topic",
    "topic_problem",
]

FORBIDDEN_HEADERS = frozenset(
    {
        # hop-by-hop and framing (RFC 9110 / 9112): the HTTP client owns them
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        # set by the engine on every notification
        "content-type",
        "x-signature",
        "x-event-number",
        "x-subscription-id",
        "x-notification-id",
        "traceparent",
        "tracestate",
    }
)
"""Header names (lower case) a channel may not set."""

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")
"""An HTTP field name (RFC 9110 token)."""

MAX_HEADER_LINE = 4096
"""Longest ``channel.header`` line."""

MESSAGE_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
"""A topic name a Subscription may give (Kafka's legal characters, with a margin)."""

MAX_TOPIC = 249
"""Kafka's limit on a topic name, which the project's prefix counts towards."""

PROJECT_TOPIC_PREFIX = "project."
"""Every message topic of a project is ``project.<project>.<name>``."""

RESERVED_TOPIC_PREFIXES = ("fhir.", "bots.", "project.", "_")
"""Names a Subscription may not give: the engine's own topics (``fhir.changes.v1``,
``bots.executions.v1``...), names that look like another project's full topic, and Kafka's and
faust's internal ones (``__consumer_offsets``)."""

_PLAIN_PROJECT = re.compile(r"^[A-Za-z0-9-]{1,100}$")

_ENDPOINT_SCHEMES = {
    "rest-hook": ("http", "https"),
    "websocket": ("ws", "wss"),
    "email": ("mailto",),
}


def _project_part(project: str) -> str:
    """The project in a topic name: as is when made of letters, digits and ``-``, otherwise
    ``_`` and its UTF-8 in hex, so that no two projects share a namespace."""
    if _PLAIN_PROJECT.match(project):
        return project
    return "_" + project.encode().hex()


def message_topic(project: str, name: str) -> str:
    """The topic a message channel of ``project`` naming ``name`` publishes to."""
    return f"{PROJECT_TOPIC_PREFIX}{_project_part(project)}.{name}"


def topic_problem(project: str, name: str) -> str | None:
    """Why ``name`` cannot be a message topic of ``project``, or None."""
    if not MESSAGE_TOPIC.match(name):
        return f"message topic {name!r} must be 1 to 200 of letters, digits, '.', '_' and '-'"
    lowered = name.lower()
    for prefix in RESERVED_TOPIC_PREFIXES:
        if lowered.startswith(prefix):
            return (
                f"message topic {name!r} is reserved: names starting with {prefix!r} "
                "are the engine's"
            )
    if len(message_topic(project, name)) > MAX_TOPIC:
        return f"message topic {name!r} is too long with the project's prefix (at most {MAX_TOPIC})"
    return None


def header_problem(line: Any) -> str | None:
    """Why a ``channel.header`` line cannot be sent, or None."""
    if not isinstance(line, str):
        return "a header must be a string 'Name: value'"
    if len(line) > MAX_HEADER_LINE:
        return f"a header line may be at most {MAX_HEADER_LINE} characters"
    name, sep, value = line.partition(":")
    name = name.strip()
    if not sep or not _HEADER_NAME.match(name):
        return f"header {line[:80]!r} is not 'Name: value' with a valid name"
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        return f"header {name!r} has a control character in its value"
    if name.lower() in FORBIDDEN_HEADERS or name.lower().startswith("proxy-"):
        return f"header {name!r} is set by the engine or the HTTP client and may not be given"
    return None


def allowed_header_lines(lines: Iterable[str]) -> tuple[str, ...]:
    """The lines :func:`header_problem` accepts (the sender drops the others)."""
    return tuple(line for line in lines if header_problem(line) is None)


class ChannelRules:
    """The write check of Subscriptions' channels.

    Args:
        guard: Judges the form of rest-hook endpoints (addresses are checked when a
            notification is sent).
    """

    def __init__(self, guard: EndpointGuard) -> None:
        self._guard = guard

    async def check(self, project: str, resource: dict[str, Any]) -> None:
        """Refuse a Subscription whose channel cannot be delivered safely.

        Raises:
            Unprocessable: Naming the element (``Subscription.channel.endpoint``...).
        """
        channel = resource.get("channel")
        if not isinstance(channel, dict):
            return  # the model validation and the criteria checks report a missing channel
        kind = str(channel.get("type") or "rest-hook")
        endpoint = channel.get("endpoint")
        if endpoint is not None:
            problem = self.endpoint_problem(project, kind, str(endpoint))
            if problem is not None:
                raise _refused(problem, "Subscription.channel.endpoint")
        elif kind in ("rest-hook", "message"):
            raise _refused(f"a {kind} channel needs an endpoint", "Subscription.channel.endpoint")
        for i, line in enumerate(channel.get("header") or ()):
            problem = header_problem(line)
            if problem is not None:
                raise _refused(problem, f"Subscription.channel.header[{i}]")

    def endpoint_problem(self, project: str, kind: str, endpoint: str) -> str | None:
        """Why ``endpoint`` can never be delivered on a ``kind`` channel, or None."""
        if endpoint.startswith("Bot/"):
            return None
        if kind == "message":
            return topic_problem(project, endpoint)
        schemes = _ENDPOINT_SCHEMES.get(kind)
        if schemes is None:
            return None  # an unknown type is the criteria check's to refuse
        scheme = urlsplit(endpoint).scheme.lower()
        if scheme not in schemes:
            wanted = " or ".join(f"{s}:" for s in schemes)
            return f"a {kind} endpoint must be a {wanted} URL, not {endpoint[:100]!r}"
        if kind != "rest-hook":
            return None
        try:
            self._guard.check_syntax(endpoint)
        except EndpointRefused as exc:
            return str(exc)
        return None  # addresses are checked at every attempt: names and allow-lists change


def _refused(message: str, where: str) -> Unprocessable:
    return Unprocessable(message, issues=(Issue(message, code="value", expression=(where,)),))
