"""Waiting for an observable state: the one way tests wait for something to happen.

Tests never sleep for a guessed time and never assert how long something took: two suites may
run side by side on a loaded machine, where any guess is wrong. A test waits until the state it
needs holds; the deadline only decides how long a *failing* test takes to say so. Timings
belong in ``bench/``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

__all__ = ["DEADLINE", "eventually"]

T = TypeVar("T")

DEADLINE = 60.0
"""Seconds after which a wait gives up. A passing test never comes near it, so it is generous:
a Kafka rebalance on a busy machine takes seconds. It stays below the per-test timeout (pytest
``timeout`` in ``pyproject.toml``) so that the failure names what was awaited."""

POLL_INTERVAL = 0.02
"""Seconds between two looks at the condition: short enough not to slow a test down, long
enough not to busy the event loop that must make the condition come true."""


@overload
async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, *, within: float = DEADLINE
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T | None], what: str, *, within: float = DEADLINE
) -> T: ...


async def eventually(check: Callable[[], object], what: str, *, within: float = DEADLINE) -> object:
    """Call ``check`` (plain or async) until it returns a truthy value, and return that value.

    Args:
        check: Looks at the state once; a falsy result means "not yet". An exception it raises
            ends the wait at once (a check may fail fast, e.g. when a process it waits for
            exited). An async check that has not returned by the deadline is cancelled, so a
            check may itself wait (read a line, wait for an event).
        what: What is awaited, in words, for the failure message.
        within: The deadline in seconds; it bounds a failure, it is not a timing assertion.

    Raises:
        AssertionError: ``check`` did not hold within the deadline (its last result is shown).
    """
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    value = await value
            except TimeoutError:
                raise AssertionError(
                    f"gave up after {within:g} s waiting for {what} (the check did not return)"
                ) from None
        if value:
            return value
        if time.monotonic() > deadline:
            shown = repr(value)
            if len(shown) > 500:
                shown = shown[:500] + "…"
            raise AssertionError(f"gave up after {within:g} s waiting for {what} (last: {shown})")
        await asyncio.sleep(POLL_INTERVAL)
