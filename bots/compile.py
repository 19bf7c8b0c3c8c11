"""Deploy-time compilation of bot source under RestrictedPython.

:func:`compile_bot` parses the source, rewrites it with RestrictedPython's guards (attribute,
item, iteration and write access go through the sandbox's guard functions), and applies this
project's own rules on top: only allow-listed modules may be imported, dangerous builtins
cannot be named, and a top-level ``def handler(fhir, event)`` must exist. Every refusal is a
:class:`fhirbots.bots.errors.CompileProblem` with line, column and message.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from types import CodeType
from typing import Any

from RestrictedPython.transformer import RestrictingNodeTransformer

from fhirbots.bots.errors import BotCompileError, CompileProblem
from fhirbots.bots.policy import SandboxPolicy

__all__ = [
    "BOT_API_MODULE",
    "BOT_FILENAME",
    "FORBIDDEN_NAMES",
    "HANDLER_NAME",
    "CompiledBot",
    "compile_bot",
]

BOT_FILENAME = "<bot>"
"""Filename of compiled bot code; tracebacks shown to authors keep only these frames."""

BOT_API_MODULE = "fhirbots"
"""The module a bot may always import: ``from fhirbots import FhirError, logger``."""

HANDLER_NAME = "handler"
"""The function every bot defines: ``def handler(fhir, event)``."""

FORBIDDEN_NAMES: frozenset[str] = frozenset(
    {
        "open",  # files
        "eval",  # code from strings escapes the compile-time checks
        "exec",
        "compile",
        "globals",  # namespaces hold the guard functions
        "locals",
        "vars",
        "dir",
        "input",  # the worker's stdin is its channel to the engine
        "help",
        "breakpoint",
        "exit",
        "quit",
        "memoryview",  # raw buffers
        "setattr",  # writes go through the write guard only
        "delattr",
        "type",  # three-argument type() builds classes outside the class-definition checks
        "super",
        "object",
    }
)
"""Builtins a bot cannot name unless it binds the name itself (e.g. ``type = r["type"]``)."""


@dataclass(frozen=True, slots=True)
class CompiledBot:
    """A bot's source that passed the sandbox checks, with its byte code."""

    source: str
    """The source as deployed."""
    digest: str
    """SHA-256 of the source; executors cache compiled code by it."""
    code: CodeType
    """Byte code of the module, to run with the sandbox's globals."""
    warnings: tuple[str, ...] = ()
    """Non-fatal remarks from RestrictedPython."""


class _BotTransformer(RestrictingNodeTransformer):
    """RestrictedPython's transformer plus import, name and location rules."""

    def __init__(
        self,
        errors: list[str],
        warnings: list[str],
        used_names: dict[str, bool],
        *,
        problems: list[CompileProblem],
        policy: SandboxPolicy,
        bound_names: set[str],
    ) -> None:
        super().__init__(errors, warnings, used_names)
        self._problems = problems
        self._policy = policy
        self._bound = bound_names

    def error(self, node: ast.AST, info: str) -> None:
        """Record a refusal with its line and column."""
        super().error(node, info)
        line = getattr(node, "lineno", None) or 1
        column = getattr(node, "col_offset", None) or 0
        self._problems.append(CompileProblem(line, column, info))

    def _check_module(self, node: ast.AST, module: str | None, level: int = 0) -> None:
        if level or not module:
            self.error(node, "relative imports are not allowed: bots are single modules")
            return
        if module not in self._policy.allowed_modules and module != BOT_API_MODULE:
            allowed = ", ".join(sorted(self._policy.allowed_modules))
            self.error(
                node,
                f"import of module {module!r} is not allowed by the sandbox policy "
                f"(allowed: {allowed}); an operator can allow it with "
                f"SandboxPolicy.with_modules({module.split('.')[0]!r})"
                + ("; submodules are never importable" if "." in module else ""),
            )

    def visit_Import(self, node: ast.Import) -> Any:
        """Refuse imports outside the allow-list."""
        for alias in node.names:
            self._check_module(node, alias.name)
        return super().visit_Import(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> Any:
        """Refuse ``from`` imports outside the allow-list."""
        self._check_module(node, node.module, node.level)
        return super().visit_ImportFrom(node)

    def visit_Name(self, node: ast.Name) -> Any:
        """Refuse loading dangerous builtins the bot did not bind itself."""
        if (
            isinstance(node.ctx, ast.Load)
            and node.id in FORBIDDEN_NAMES
            and node.id not in self._bound
        ):
            self.error(node, f"name {node.id!r} is not available in the bot sandbox")
        return super().visit_Name(node)


def _bound_names(tree: ast.AST) -> set[str]:
    """Names the source binds anywhere (assignments, defs, parameters, imports)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
    return bound


def _check_handler(tree: ast.Module, problems: list[CompileProblem]) -> None:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == HANDLER_NAME:
            args = node.args
            positional = len(args.posonlyargs) + len(args.args)
            if positional < 2 and args.vararg is None:
                problems.append(
                    CompileProblem(
                        node.lineno,
                        node.col_offset,
                        f"{HANDLER_NAME}() must accept two arguments: (fhir, event)",
                    )
                )
            return
    problems.append(
        CompileProblem(
            1, 0, f"a bot must define a top-level function `def {HANDLER_NAME}(fhir, event)`"
        )
    )


def _parse(source: str, problems: list[CompileProblem]) -> ast.Module | None:
    try:
        return ast.parse(source, BOT_FILENAME, "exec")
    except SyntaxError as exc:
        column = max((exc.offset or 1) - 1, 0)
        problems.append(CompileProblem(exc.lineno or 1, column, f"SyntaxError: {exc.msg}"))
    except (ValueError, RecursionError, MemoryError) as exc:
        # ValueError: null bytes; RecursionError/MemoryError: pathological nesting.
        # The message says which (Python 3.11.2 raises ValueError for null bytes, later 3.11
        # releases SyntaxError; both name the null bytes).
        detail = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
        problems.append(CompileProblem(1, 0, f"source cannot be parsed: {detail}"))
    return None


def compile_bot(source: str, policy: SandboxPolicy | None = None) -> CompiledBot:
    """Compile a bot's source for the sandbox.

    Args:
        source: Python text defining ``def handler(fhir, event)``.
        policy: the sandbox policy (its module allow-list and source size limit);
            defaults to :class:`SandboxPolicy()`.

    Returns:
        The compiled bot.

    Raises:
        BotCompileError: with every (line, column, message) problem found.
    """
    policy = policy or SandboxPolicy()
    problems: list[CompileProblem] = []
    if len(source.encode("utf-8", "surrogatepass")) > policy.max_source_bytes:
        problems.append(
            CompileProblem(
                1,
                0,
                f"source is larger than SandboxPolicy.max_source_bytes "
                f"({policy.max_source_bytes} bytes)",
            )
        )
        raise BotCompileError(problems)
    tree = _parse(source, problems)
    if tree is None:
        raise BotCompileError(problems)
    _check_handler(tree, problems)
    errors: list[str] = []
    warnings: list[str] = []
    transformer = _BotTransformer(
        errors, warnings, {}, problems=problems, policy=policy, bound_names=_bound_names(tree)
    )
    try:
        transformed = transformer.visit(tree)
        if not problems:
            code = compile(transformed, BOT_FILENAME, "exec")
    except (RecursionError, MemoryError, SyntaxError, ValueError) as exc:
        problems.append(
            CompileProblem(1, 0, f"source cannot be compiled: {exc.__class__.__name__}")
        )
    if problems:
        problems.sort(key=lambda p: (p.line, p.column))
        raise BotCompileError(problems)
    digest = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
    return CompiledBot(source=source, digest=digest, code=code, warnings=tuple(warnings))
