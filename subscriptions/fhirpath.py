"""FHIRPath criteria with ``%current`` and ``%previous``.

Expressions are compiled once (fhirpathpy) and cached. The expression runs on the current
version of the resource (the previous one on delete) with two environment variables:
``%current`` and ``%previous``, each empty when absent (``%previous`` on a create,
``%current`` on a delete), so ``%previous.exists()`` is false and ``%previous.empty()`` true on a
create, as Medplum documents. A criterion holds when its first result is ``true``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import fhirpathpy
from antlr4 import CommonTokenStream, InputStream, Token  # type: ignore[import-untyped]
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from fhirbots.subscriptions.errors import CriteriaError, EvaluationError

__all__ = [
    "CompiledPath",
    "check_syntax",
    "compile_fhirpath",
    "evaluate_fhirpath",
    "fhirpath_holds",
]

CompiledPath = Callable[[Any, Any], list[Any]]
"""A compiled expression: ``(resource, environment) -> results``."""

_R4 = models["r4"]

CACHE_SIZE = 4096
"""Compiled expressions kept: more than the distinct expressions of any realistic project."""


class _Strict:
    """An ANTLR error listener (duck-typed: ANTLR calls these four methods by name) that
    turns the syntax errors fhirpathpy's parser recovers from into failures."""

    def syntaxError(
        self, _recognizer: Any, _offending: Any, _line: int, column: int, msg: str, _e: Any
    ) -> None:
        raise CriteriaError(f"syntax error at column {column + 1}: {msg}")

    def reportAmbiguity(self, *_args: Any) -> None:
        """Ambiguities are resolved by the grammar's precedence; nothing to report."""

    def reportAttemptingFullContext(self, *_args: Any) -> None:
        """A parser diagnostic, not an error."""

    def reportContextSensitivity(self, *_args: Any) -> None:
        """A parser diagnostic, not an error."""


def check_syntax(expression: str) -> None:
    """Raise :class:`CriteriaError` unless ``expression`` is one complete FHIRPath expression.

    fhirpathpy's parser recovers from syntax errors silently (``a b c`` compiles to ``a``);
    a criterion that means something else than written must be refused instead.
    """
    listener = _Strict()
    lexer = FHIRPathLexer(InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    stream = CommonTokenStream(lexer)
    parser = FHIRPathParser(stream)
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    try:
        parser.expression()
    except CriteriaError:
        raise
    except Exception as exc:  # the generated lexer raises its own recognition errors
        raise CriteriaError(f"syntax error: {exc}") from exc
    if stream.LT(1).type != Token.EOF:
        raise CriteriaError(f"unexpected {stream.LT(1).text!r} after a complete expression")


@lru_cache(maxsize=CACHE_SIZE)
def compile_fhirpath(expression: str) -> CompiledPath:
    """Compile ``expression`` (cached).

    Raises:
        CriteriaError: The expression does not parse.
    """
    if not expression.strip():
        raise CriteriaError("empty FHIRPath expression")
    try:
        check_syntax(expression)
    except CriteriaError as exc:
        raise CriteriaError(f"invalid FHIRPath {expression!r}: {exc}") from exc
    try:
        compiled: CompiledPath = fhirpathpy.compile(expression, _R4)
    except Exception as exc:  # fhirpathpy raises bare Exceptions from its ANTLR parser
        raise CriteriaError(f"invalid FHIRPath {expression!r}: {exc}") from exc
    return compiled


def evaluate_fhirpath(
    expression: str, current: dict[str, Any] | None, previous: dict[str, Any] | None
) -> list[Any]:
    """The results of ``expression`` on a change.

    Args:
        expression: The FHIRPath expression.
        current: The new version (None on delete).
        previous: The version before the change (None on create).

    Returns:
        fhirpathpy's result list.

    Raises:
        CriteriaError: The expression does not parse.
        EvaluationError: The expression failed on this resource.
    """
    compiled = compile_fhirpath(expression)
    context = current if current is not None else (previous or {})
    # An absent version is the empty collection, not an empty object: `{}` exists.
    environment = {
        "current": current if current is not None else [],
        "previous": previous if previous is not None else [],
    }
    try:
        return compiled(context, environment)
    except Exception as exc:  # user expressions can fail in many fhirpathpy-internal ways
        raise EvaluationError(f"FHIRPath {expression!r} failed: {exc}") from exc


def fhirpath_holds(
    expression: str, current: dict[str, Any] | None, previous: dict[str, Any] | None
) -> bool:
    """Whether the first result of ``expression`` is ``true`` (see :func:`evaluate_fhirpath`)."""
    result = evaluate_fhirpath(expression, current, previous)
    return bool(result) and result[0] is True
