"""What a handler gets from its request: the engine's services, the caller, the trace."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fhirbots.engine.fhir.search import SearchService
from fhirbots.engine.fhir.service import FhirService
from fhirbots.engine.settings import Settings
from fhirbots.engine.storage.model import WriteContext
from fhirbots.engine.web.auth import Principal

__all__ = [
    "PRINCIPAL",
    "SERVICES",
    "TRACEPARENT_KEY",
    "Services",
    "principal",
    "services",
    "write_context",
]

GetUrl = Callable[[str, str], Awaitable[Any]]


@dataclass
class Services:
    """The engine's parts that request handlers use."""

    settings: Settings
    fhir: FhirService
    search: SearchService
    get_url: GetUrl
    """``(project, relative url) -> resource or Bundle`` for GET entries of a batch."""


SERVICES = web.AppKey("services", Services)


PRINCIPAL = web.RequestKey("principal", Principal)
TRACEPARENT_KEY = web.RequestKey("traceparent", str)


def services(request: web.Request) -> Services:
    """The engine's services."""
    return request.app[SERVICES]


def principal(request: web.Request) -> Principal:
    """The authenticated caller (set by the auth middleware)."""
    return request[PRINCIPAL]


def write_context(request: web.Request) -> WriteContext:
    """Author and trace of the writes this request makes."""
    return WriteContext(author=principal(request).author, traceparent=request[TRACEPARENT_KEY])
