"""compile_bot: accepted sources, and refusals with line, column and message."""

from __future__ import annotations

import pytest

from fhirbots.bots.compile import BOT_FILENAME, compile_bot
from fhirbots.bots.errors import BotCompileError, CompileProblem
from fhirbots.bots.policy import SandboxPolicy

GOOD = """
import json
from datetime import datetime

def handler(fhir, event):
    type = event.input["type"]
    return json.dumps({"type": type, "at": datetime(2024, 1, 1).isoformat()})
"""


def problems(source: str, policy: SandboxPolicy | None = None) -> list[CompileProblem]:
    with pytest.raises(BotCompileError) as refused:
        compile_bot(source, policy)
    return refused.value.problems


def test_good_source_compiles_with_digest() -> None:
    compiled = compile_bot(GOOD)
    assert compiled.code.co_filename == BOT_FILENAME
    assert len(compiled.digest) == 64
    assert compile_bot(GOOD).digest == compiled.digest
    assert compile_bot(GOOD + "\n").digest != compiled.digest


def test_syntax_error_has_line_and_column() -> None:
    (problem,) = problems("def handler(fhir, event):\n    return [1,, 2]\n")
    assert (problem.line, problem.column) == (2, 14)
    assert problem.message.startswith("SyntaxError")
    assert str(problem).startswith("2:14: SyntaxError")


def test_every_policy_problem_is_reported_in_source_order() -> None:
    source = "import os\ndef handler(fhir, event):\n    x = event.__class__\n    return open(x)\n"
    found = problems(source)
    assert [(p.line, p.column) for p in found] == [(1, 0), (3, 8), (4, 11)]
    assert "SandboxPolicy.with_modules('os')" in found[0].message
    assert "__class__" in found[1].message
    assert "'open'" in found[2].message


def test_import_refusal_follows_the_policy() -> None:
    source = "import csv\ndef handler(fhir, event):\n    return 1\n"
    assert "'csv'" in problems(source)[0].message
    assert compile_bot(source, SandboxPolicy().with_modules("csv")).digest


def test_relative_and_star_imports_are_refused() -> None:
    assert "relative" in problems("from . import x\ndef handler(f, e):\n    pass\n")[0].message
    found = problems("from json import *\ndef handler(f, e):\n    pass\n")
    assert any('"*" imports' in p.message for p in found)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = 1\n", "must define a top-level function"),
        ("def handler(event):\n    pass\n", "must accept two arguments"),
        ("class A:\n    def handler(self, f, e):\n        pass\n", "must define"),
    ],
)
def test_handler_is_required(source: str, message: str) -> None:
    assert message in problems(source)[0].message


def test_handler_with_varargs_is_accepted() -> None:
    assert compile_bot("def handler(*args):\n    return len(args)\n").code


def test_oversized_and_pathological_sources_are_refused() -> None:
    small = SandboxPolicy(max_source_bytes=64)
    assert "max_source_bytes" in problems("#" * 100 + "\n", small)[0].message
    assert "null bytes" in problems("def handler(f, e):\n    return 1\x00\n")[0].message
    deep = "def handler(f, e):\n    return " + "[" * 2000 + "]" * 2000 + "\n"
    assert problems(deep)


def test_compile_error_message_summarises() -> None:
    with pytest.raises(BotCompileError, match=r"bot source refused: 1:0: import of module"):
        compile_bot("import sys\ndef handler(f, e):\n    pass\n")
