"""Read-only proxies of the modules a bot may import.

A bot never receives a real module object: ``module.__loader__``, ``module.__dict__`` and
submodules (``json.decoder``, ``collections.abc``, ``re._parser``) would lead out of the
sandbox. A :class:`ModuleProxy` exposes only a module's public members (its ``__all__``, or
its non-underscore names), never a module, and minus the members listed in
:data:`HIDDEN_MEMBERS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["HIDDEN_MEMBERS", "ModuleProxy", "build_proxies", "build_proxy"]

HIDDEN_MEMBERS: dict[str, frozenset[str]] = {
    # update_wrapper/wraps get and set attributes named by the caller: a getattr/setattr
    # primitive that would bypass the attribute guard.
    # singledispatch(method).register evaluates string annotations with eval(), outside the
    # compile-time checks.
    "functools": frozenset(
        {
            "update_wrapper",
            "wraps",
            "WRAPPER_ASSIGNMENTS",
            "WRAPPER_UPDATES",
            "singledispatch",
            "singledispatchmethod",
        }
    ),
    # Formatter resolves "{0.__class__}" fields with the real getattr.
    "string": frozenset({"Formatter"}),
    # template/TEMPLATE are deprecated (warn on use); Scanner drives the regex internals.
    "re": frozenset({"template", "TEMPLATE", "Scanner"}),
    # Process-wide mutable contexts would leak state from one execution into the next.
    "decimal": frozenset({"DefaultContext", "BasicContext", "ExtendedContext", "setcontext"}),
    # getnode/uuid1 read the hardware address and may run external programs to find it;
    # Enum, bytes_ and int_ are the module's own imports, not its API (it has no __all__).
    "uuid": frozenset({"getnode", "uuid1", "Enum", "bytes_", "int_"}),
    # reset_tzpath changes where every later execution reads time-zone files from;
    # available_timezones walks the file system.
    "zoneinfo": frozenset({"reset_tzpath", "TZPATH", "available_timezones"}),
}
"""Public members that are still withheld from bots, with the reason beside each."""


class ModuleProxy:
    """An immutable view of a module's safe members."""

    __slots__ = ("_proxy_members", "_proxy_name")

    _proxy_name: str
    _proxy_members: dict[str, Any]

    def __init__(self, name: str, members: dict[str, Any]) -> None:
        object.__setattr__(self, "_proxy_name", name)
        object.__setattr__(self, "_proxy_members", dict(members))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._proxy_members[name]
        except KeyError:
            raise AttributeError(
                f"module {self._proxy_name!r} has no attribute {name!r} in the bot sandbox"
            ) from None

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"module {self._proxy_name!r} is read-only in the bot sandbox")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"module {self._proxy_name!r} is read-only in the bot sandbox")

    def __dir__(self) -> list[str]:
        return sorted(self._proxy_members)

    def __repr__(self) -> str:
        return f"<sandboxed module {self._proxy_name!r}>"


def _public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")]
    return [n for n in names if not n.startswith("_")]


def build_proxy(name: str) -> ModuleProxy:
    """Import ``name`` and wrap its safe members."""
    module = importlib.import_module(name)
    hidden = HIDDEN_MEMBERS.get(name, frozenset())
    members: dict[str, Any] = {}
    for member in _public_names(module):
        if member in hidden:
            continue
        value = getattr(module, member, None)
        if value is None and not hasattr(module, member):
            continue
        if isinstance(value, ModuleType):
            continue
        members[member] = value
    return ModuleProxy(name, members)


def build_proxies(names: frozenset[str]) -> dict[str, ModuleProxy]:
    """Proxies of every importable name in ``names`` (names that fail to import are skipped)."""
    proxies: dict[str, ModuleProxy] = {}
    for name in sorted(names):
        try:
            proxies[name] = build_proxy(name)
        except ImportError:
            continue
    return proxies
