"""The member allow-list, walked: everything a bot can reach is listed and leads nowhere.

Starting from every allowed module's proxy, every safe builtin and a sample object of every
listed class, the walk follows each public attribute the guard lets through, three levels
deep, and checks that every step is on the allow-list and that no value is a frame, code
object, traceback, module, namespace ``__dict__``, globals or a piece of format machinery.
"""

from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import functools
import gc
import json
import re
import statistics
import string
import sys
import types
import uuid
import zoneinfo
from collections.abc import Iterator
from typing import Any

import pytest

from fhirbots.bots._allowlist import (
    CLASS_ATTRIBUTES,
    INSTANCE_ATTRIBUTES,
    MODULE_MEMBERS,
    allowed_classes,
    attribute_allowed,
)
from fhirbots.bots._modules import ModuleProxy, build_proxies
from fhirbots.bots._sandbox import (
    _SAFE_BUILTIN_NAMES,
    BotEvent,
    BotFhirClient,
    BotFhirError,
    BotLogger,
    LogBuffer,
    SandboxViolation,
    guarded_getattr,
)
from fhirbots.bots.policy import DEFAULT_ALLOWED_MODULES

_POINT: Any = collections.namedtuple("_POINT", "x y")  # what a bot would use

_FORMAT_MACHINERY: tuple[Any, ...] = (
    str.format,
    str.format_map,
    string.Formatter,
    collections.UserString,
    string.Formatter.format,
    string.Formatter.vformat,
)
_FORBIDDEN_TYPES = (
    types.FrameType,
    types.CodeType,
    types.TracebackType,
    types.ModuleType,
    types.CellType,
)
_NAMESPACES = {id(vars(m)) for m in list(sys.modules.values()) if m is not None}
"""Every module's globals: no walk may reach one."""


def _format_bound(value: Any) -> bool:
    """A bound ``str.format``/``format_map`` (``"{0.x}".format``) or a wrapper of one."""
    if isinstance(value, functools.partial | functools.partialmethod):
        return _forbidden_reason(value.func) is not None
    name = getattr(value, "__name__", None)
    owner = getattr(value, "__self__", None)
    return name in ("format", "format_map") and isinstance(owner, str | type)


def _forbidden_reason(value: Any) -> str | None:
    if isinstance(value, _FORBIDDEN_TYPES):
        return type(value).__name__
    if isinstance(value, dict) and id(value) in _NAMESPACES:
        return "a module's globals"
    if isinstance(value, types.MappingProxyType) and "__doc__" in value:
        return "a class's __dict__"
    if any(value is machinery for machinery in _FORMAT_MACHINERY) or _format_bound(value):
        return "format machinery"
    if isinstance(value, type) and issubclass(value, collections.UserString | string.Formatter):
        return "format machinery"
    return None


def _samples() -> list[Any]:
    """One object of every class a bot can obtain, built the way a bot would."""

    def generator() -> Iterator[int]:
        yield 1

    class Prop:
        value = property(lambda self: 1)

    try:
        json.loads("{")
    except json.JSONDecodeError as exc:
        decode_error: Exception = exc
    try:
        re.compile("(")
    except re.error as exc:
        regex_error: Exception = exc
    return [
        "text",
        b"bytes",
        bytearray(b"x"),
        1,
        1.5,
        1j,
        True,
        [1],
        {"a": 1},
        {"a": 1}.keys(),
        {"a": 1}.items(),
        {1},
        frozenset({1}),
        (1,),
        range(3),
        slice(1, 2),
        generator(),
        Prop.__dict__["value"],
        ValueError("x"),
        decode_error,
        regex_error,
        collections.ChainMap({}),
        collections.Counter("aab"),
        collections.OrderedDict(a=1),
        collections.defaultdict(list),
        collections.deque([1]),
        _POINT(1, 2),
        datetime.date(2024, 1, 2),
        datetime.date(2024, 1, 2).isocalendar(),
        datetime.date(2024, 1, 2).timetuple(),
        datetime.datetime(2024, 1, 2, 3, 4, tzinfo=datetime.UTC),
        datetime.time(1, 2),
        datetime.timedelta(1),
        datetime.UTC,
        decimal.Decimal("1.5"),
        decimal.Decimal("1.5").as_tuple(),
        decimal.Context(),
        functools.partial(int, "1"),
        functools.partialmethod(int),
        functools.lru_cache(lambda: 1),
        functools.cmp_to_key(lambda a, b: 0)(1),
        json.JSONEncoder(),
        json.JSONDecoder(),
        re.compile("(?P<a>x)"),
        re.match("(?P<a>x)", "x"),
        re.IGNORECASE,
        statistics.NormalDist(0, 1),
        statistics.linear_regression([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]),
        string.Template("$x"),
        uuid.uuid4(),
        uuid.SafeUUID.safe,
        zoneinfo.ZoneInfo("UTC"),
        BotEvent({"input": 1}),
        BotFhirClient(lambda method, args: {"ok": True}),
        BotLogger(LogBuffer(10)),
        BotFhirError("x", 404, {}),
    ]


def _roots() -> list[Any]:
    proxies = build_proxies(DEFAULT_ALLOWED_MODULES)
    members = [getattr(p, n) for p in proxies.values() for n in dir(p)]
    safe_builtins = [getattr(builtins, n) for n in _SAFE_BUILTIN_NAMES]
    return [*proxies.values(), *members, *safe_builtins, *_samples()]


def _reachable(obj: Any) -> Iterator[tuple[str, Any]]:
    """Every attribute of ``obj`` the guard hands out, with its name."""
    names = dir(obj) if not isinstance(obj, ModuleProxy) else obj.__dir__()
    for name in names:
        if name.startswith("_"):
            continue
        try:
            yield name, guarded_getattr(obj, name)
        except SandboxViolation:
            continue
        except Exception:  # a listed attribute that raises on this sample (e.g. a property)
            continue


def test_walk_reaches_nothing_forbidden_and_only_listed_attributes() -> None:
    seen: set[int] = set()
    frontier = _roots()
    steps = 0
    for depth in range(3):
        following = []
        for obj in frontier:
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            assert _forbidden_reason(obj) is None, (depth, obj)
            for name, value in _reachable(obj):
                steps += 1
                reason = _forbidden_reason(value)
                assert reason is None, f"{obj!r}.{name} is {reason}"
                if not isinstance(obj, ModuleProxy):
                    assert attribute_allowed(obj, name), (obj, name)
                following.append(value)
        frontier = following
    assert steps > 2000  # the walk really covered the modules, builtins and classes


def test_every_unlisted_public_attribute_of_reachable_classes_is_refused() -> None:
    classes = {type(s) for s in _samples()} | set(allowed_classes())
    refused = 0
    for cls in classes:
        for name in dir(cls):
            if name.startswith("_"):
                continue
            owner = next((k for k in cls.__mro__ if name in k.__dict__), None)
            listed = owner is not None and (
                name in CLASS_ATTRIBUTES.get(owner, ()) or owner.__module__ == "bot"
            )
            if listed:
                continue
            with pytest.raises(SandboxViolation):
                guarded_getattr(cls, name)
            refused += 1
    assert refused > 20


def test_listed_names_exist_where_they_are_listed() -> None:
    for cls, names in CLASS_ATTRIBUTES.items():
        assert names <= set(cls.__dict__), (cls, names - set(cls.__dict__))
    for cls, names in INSTANCE_ATTRIBUTES.items():
        assert not names & set(cls.__dict__), cls


def test_module_proxies_expose_exactly_the_listed_members() -> None:
    proxies = build_proxies(DEFAULT_ALLOWED_MODULES)
    assert set(MODULE_MEMBERS) == DEFAULT_ALLOWED_MODULES
    for name, proxy in proxies.items():
        assert set(dir(proxy)) <= MODULE_MEMBERS[name]
        assert len(dir(proxy)) >= len(MODULE_MEMBERS[name]) - 2, name  # version-dependent extras


@pytest.mark.parametrize(
    ("obj", "name"),
    [
        (collections.ChainMap, "register"),
        ("x", "format"),
        ("x", "format_map"),
        (str, "format"),
        (int, "mro"),
        (ValueError("x"), "with_traceback"),
        (re.compile("a"), "scanner"),
        (zoneinfo.ZoneInfo, "clear_cache"),
        (zoneinfo.ZoneInfo, "from_file"),
        ({}.keys(), "mapping"),
        (AttributeError("x"), "obj"),
        (ImportError("x"), "path"),
    ],
)
def test_known_paths_are_refused(obj: Any, name: str) -> None:
    with pytest.raises(SandboxViolation):
        guarded_getattr(obj, name)


@pytest.mark.parametrize("member", ["UserString", "UserDict", "UserList", "abc"])
def test_collections_hides_classes_that_format_or_register(member: str) -> None:
    proxy = build_proxies(frozenset({"collections"}))["collections"]
    with pytest.raises(AttributeError):
        getattr(proxy, member)


def test_bot_classes_may_read_their_own_attributes_only() -> None:
    namespace: dict[str, Any] = {"__name__": "bot"}
    exec(  # a class as bot code defines it, without the sandbox's rewriting
        "class Mine(dict):\n    color = 'red'\n    def shout(self):\n        return 1\n",
        namespace,
    )
    mine = namespace["Mine"]()
    mine.extra = 3
    assert guarded_getattr(mine, "color") == "red"
    assert guarded_getattr(mine, "shout")() == 1
    assert guarded_getattr(mine, "extra") == 3
    assert guarded_getattr(mine, "keys")() == {}.keys()
    with pytest.raises(SandboxViolation):
        guarded_getattr(namespace["Mine"], "mro")
    gc.collect()
