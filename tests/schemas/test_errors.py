"""One exception root: every exception class fhirbots defines derives from FhirbotsError.

Every module of the four packages is imported, so a new exception anywhere (a stray root
deriving from ``Exception`` or a builtin alone) fails here rather than in a caller's
``except FhirbotsError``.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

import fhirbots
from fhirbots.bots._protocol import ChannelClosedError, FrameTooLargeError
from fhirbots.bots._sandbox import BotFhirError, SandboxViolation
from fhirbots.bots.errors import BotError, CronError, PolicyError
from fhirbots.engine.automation.errors import BotRuntimeError
from fhirbots.engine.cli.client import ClientError
from fhirbots.engine.delivery.errors import DeliveryError
from fhirbots.engine.errors import FhirError
from fhirbots.engine.eventlog.errors import EventLogError
from fhirbots.engine.observatory.errors import ObservatoryStoreError
from fhirbots.schemas.errors import FhirbotsError
from fhirbots.schemas.validation import ResourceInvalid
from fhirbots.subscriptions.errors import SubscriptionError
from fhirbots.subscriptions.search.errors import SearchError


def _all_modules() -> list[ModuleType]:
    return [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(fhirbots.__path__, "fhirbots.")
    ]


def _subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found


def test_every_exception_defined_in_fhirbots_derives_from_the_root() -> None:
    _all_modules()
    ours = {c for c in _subclasses(BaseException) if c.__module__.startswith("fhirbots.")}
    strays = sorted(
        f"{c.__module__}.{c.__qualname__}" for c in ours if not issubclass(c, FhirbotsError)
    )
    assert strays == []
    assert len(ours) > 40  # the walk did import the packages


def test_every_errors_module_draws_its_tree_under_the_root() -> None:
    errors_modules = [m for m in _all_modules() if m.__name__.rsplit(".", 1)[-1] == "errors"]
    assert len(errors_modules) >= 7
    for module in errors_modules:
        assert "FhirbotsError" in (module.__doc__ or ""), module.__name__


@pytest.mark.parametrize(
    "root",
    [
        ResourceInvalid,
        SubscriptionError,
        SearchError,
        BotError,
        FhirError,
        EventLogError,
        DeliveryError,
        BotRuntimeError,
        ObservatoryStoreError,
        ClientError,
    ],
)
def test_package_roots_sit_directly_under_the_root(root: type[Exception]) -> None:
    assert root.__mro__[1] is FhirbotsError


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (ResourceInvalid, ValueError),
        (PolicyError, ValueError),
        (CronError, ValueError),
        (FrameTooLargeError, ValueError),
        (ChannelClosedError, EOFError),
        (SandboxViolation, AttributeError),
    ],
)
def test_builtin_bases_that_callers_rely_on_are_kept(
    error: type[Exception], builtin: type[Exception]
) -> None:
    assert issubclass(error, FhirbotsError) and issubclass(error, builtin)


def test_the_bot_facing_fhir_error_is_not_the_engines() -> None:
    assert issubclass(BotFhirError, BotError) and not issubclass(BotFhirError, FhirError)
