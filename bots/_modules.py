"""Read-only proxies of the modules a bot may import.

A bot never receives a real module object: ``module.__loader__``, ``module.__dict__`` and
submodules (``json.decoder``, ``collections.abc``, ``re._parser``) would lead out of the
sandbox. A :class:`ModuleProxy` exposes exactly the members
:data:`fhirbots.bots._allowlist.MODULE_MEMBERS` lists for the module; a module an operator
added without such a list exposes its public members (its ``__all__``, or its non-underscore
names) minus :data:`HIDDEN_MEMBERS`. Never a module.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from fhirbots.bots._allowlist import MODULE_MEMBERS

__all__ = ["HIDDEN_MEMBERS", "ModuleProxy", "build_proxies", "build_proxy"]

HIDDEN_MEMBERS: dict[str, frozenset[str]] = {
    # Modules an operator adds without an entry in MODULE_MEMBERS expose their public
    # names; these are withheld from them too should one be re-added.
    "functools": frozenset({"update_wrapper", "wraps", "singledispatch", "singledispatchmethod"}),
    "string": frozenset({"Formatter"}),
    "collections": frozenset({"UserString", "UserDict", "UserList"}),
}
"""Public members withheld even from modules without an explicit member list."""


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
    listed = MODULE_MEMBERS.get(module.__name__)
    if listed is not None:
        return sorted(listed)
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
