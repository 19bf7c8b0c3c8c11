"""The sandbox escape corpus: attempts to break out of the bot sandbox, to read another
project's code or data, to change what the next bot sees, or to exhaust the host.

Each module holds one class of attempts as a table of :class:`Attempt`; :data:`ATTEMPTS` is
all of them. ``tests/bots/test_escapes.py`` runs every attempt through one worker pool and
checks that it is refused or contained, and that the next execution, in another project,
is unaffected.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

__all__ = ["Attempt", "handler"]


@dataclass(frozen=True)
class Attempt:
    """One escape attempt and how the sandbox must answer it."""

    name: str
    source: str
    expect: str
    """compile | error | timeout | memory | success, or alternatives ``a|b``."""
    detail: str = ""
    """Must appear in the compile problems, or in the error, output or logs."""


def handler(body: str, preamble: str = "") -> str:
    """A bot whose handler runs ``body`` after ``preamble`` (imports) at module level."""
    indented = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return f"{textwrap.dedent(preamble).strip()}\ndef handler(fhir, event):\n{indented}\n"
