"""Module proxies: only public, non-module, non-hidden members; read-only."""

from __future__ import annotations

import json
import types

import pytest

from fhirbots.bots._modules import HIDDEN_MEMBERS, ModuleProxy, build_proxies, build_proxy
from fhirbots.bots.policy import DEFAULT_ALLOWED_MODULES


def test_every_default_module_has_a_proxy_without_modules_or_private_names() -> None:
    proxies = build_proxies(DEFAULT_ALLOWED_MODULES)
    assert set(proxies) == DEFAULT_ALLOWED_MODULES
    for name, proxy in proxies.items():
        for member in dir(proxy):
            assert not member.startswith("_"), (name, member)
            assert not isinstance(getattr(proxy, member), types.ModuleType), (name, member)
        for hidden in HIDDEN_MEMBERS.get(name, ()):
            assert hidden not in dir(proxy)


def test_proxy_exposes_the_real_functions() -> None:
    proxy = build_proxy("json")
    assert proxy.dumps is json.dumps
    assert proxy.loads('{"a": 1}') == {"a": 1}


@pytest.mark.parametrize(
    ("module", "member"),
    [
        ("json", "decoder"),
        ("json", "codecs"),
        ("collections", "abc"),
        ("re", "enum"),
        ("functools", "RLock"),
        ("string", "Formatter"),
        ("uuid", "os"),
    ],
)
def test_leaky_members_are_absent(module: str, member: str) -> None:
    proxy = build_proxy(module)
    with pytest.raises(AttributeError, match="in the bot sandbox"):
        getattr(proxy, member)


def test_proxy_is_read_only() -> None:
    proxy = build_proxy("math")
    with pytest.raises(AttributeError, match="read-only"):
        proxy.pi = 3
    with pytest.raises(AttributeError, match="read-only"):
        del proxy.pi
    assert repr(proxy) == "<sandboxed module 'math'>"


def test_unknown_modules_are_skipped() -> None:
    proxies = build_proxies(frozenset({"json", "no_such_module_here"}))
    assert set(proxies) == {"json"}
    assert isinstance(proxies["json"], ModuleProxy)
