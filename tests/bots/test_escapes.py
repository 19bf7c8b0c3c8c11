"""The escape corpus: attempts to break out of the bot sandbox or to exhaust the host.

Each attempt must be refused (at compile time, or as an ``error`` result naming the refusal)
or contained (``timeout``/``memory`` result, or a harmless success), and the executor must
serve a normal execution right afterwards.
"""

from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from fhirbots.bots.errors import BotCompileError
from fhirbots.bots.executor import ExecutionRequest
from fhirbots.bots.testing import BotHarness, make_bot
from tests.bots.conftest import assert_healthy

MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


@dataclass(frozen=True)
class Attempt:
    """One escape attempt and how the sandbox must answer it."""

    name: str
    source: str
    expect: str  # compile | error | timeout | memory | success, or alternatives "a|b"
    detail: str = ""  # must appear in the compile problems, the error, or the output


def handler(body: str, preamble: str = "") -> str:
    """A bot whose handler runs ``body``."""
    indented = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return f"{textwrap.dedent(preamble).strip()}\ndef handler(fhir, event):\n{indented}\n"


ATTEMPTS = [
    # --- attribute walks to object.__subclasses__ and friends ---------------------------
    Attempt(
        "subclasses-walk",
        handler("return ().__class__.__bases__[0].__subclasses__()"),
        "compile",
        "__class__",
    ),
    Attempt("getattr-dunder", handler("return getattr((), '__class__')"), "error", "'_'"),
    Attempt("getattr-mro", handler("return getattr(int, 'mro')()"), "error", "mro"),
    Attempt("class-dict", handler("class A:\n    pass\nreturn A.__dict__"), "compile", "__dict__"),
    Attempt("type-builtin", handler("return type(1)"), "compile", "'type'"),
    Attempt("object-builtin", handler("return object"), "compile", "'object'"),
    Attempt(
        "metaclass-keyword", handler("class A(metaclass=dict):\n    pass"), "compile", "metaclass"
    ),
    # --- format-string attribute access ----------------------------------------------------
    Attempt("str-format", handler("return '{0.__class__}'.format(1)"), "error", "str.format"),
    Attempt(
        "str-format-unbound",
        handler("return getattr(str, 'format')('{0.__class__}', 1)"),
        "error",
        "str.format",
    ),
    Attempt(
        "str-format-map",
        handler("return '{x.__class__}'.format_map({'x': 1})"),
        "error",
        "str.format_map",
    ),
    Attempt(
        "str-subclass-format",
        handler("class S(str):\n    pass\nreturn S('{0.__class__}').format(1)"),
        "error",
        "str.format",
    ),
    Attempt(
        "string-formatter",
        handler("return string.Formatter().format('{0.__class__}', 1)", "import string"),
        "error",
        "Formatter",
    ),
    Attempt("fstring-dunder", handler("return f'{event.__class__}'"), "compile", "__class__"),
    Attempt(
        "fstring-conversion-getattr",
        handler("return f\"{getattr(event, '__class__')!r}\""),
        "error",
        "'_'",
    ),
    Attempt(
        "fstring-conversion-harmless", handler("return f'{event.input!r:>5}'"), "success", "None"
    ),
    # --- generators, frames and tracebacks -----------------------------------------------------
    Attempt(
        "gi-frame",
        handler("g = (x for x in [1])\nreturn g.gi_frame.f_globals"),
        "compile",
        "gi_frame",
    ),
    Attempt(
        "gi-frame-getattr",
        handler("g = (x for x in [1])\nreturn getattr(g, 'gi_frame')"),
        "error",
        "gi_frame",
    ),
    Attempt(
        "gi-code-getattr",
        handler("g = (x for x in [1])\nreturn getattr(g, 'gi_code')"),
        "error",
        "gi_code",
    ),
    Attempt(
        "traceback-frame",
        handler("try:\n    1 / 0\nexcept Exception as e:\n    return e.__traceback__.tb_frame"),
        "compile",
        "__traceback__",
    ),
    Attempt(
        "traceback-getattr",
        handler("try:\n    1 / 0\nexcept Exception as e:\n    return getattr(e, '__traceback__')"),
        "error",
        "'_'",
    ),
    Attempt("f-back", handler("return getattr(getattr(fhir, 'read'), '__self__')"), "error", "'_'"),
    Attempt(
        "f-globals-name", handler("x = {}\nreturn getattr(x, 'f_globals')"), "error", "f_globals"
    ),
    # --- modules: imports and what allowed modules could leak ----------------------------------
    Attempt("import-os", handler("return os.getcwd()", "import os"), "compile", "'os'"),
    Attempt("import-sys", handler("return sys.modules", "import sys"), "compile", "'sys'"),
    Attempt(
        "import-subprocess",
        handler("return subprocess.run(['id'])", "import subprocess"),
        "compile",
        "'subprocess'",
    ),
    Attempt(
        "import-socket", handler("return socket.socket()", "import socket"), "compile", "'socket'"
    ),
    Attempt(
        "import-importlib",
        handler("return importlib.import_module('os')", "import importlib"),
        "compile",
        "'importlib'",
    ),
    Attempt(
        "import-ctypes", handler("return ctypes.CDLL(None)", "import ctypes"), "compile", "'ctypes'"
    ),
    Attempt(
        "import-builtins", handler("return builtins.open", "import builtins"), "compile", "builtins"
    ),
    Attempt(
        "import-pickle",
        handler("return pickle.loads(b'cos\\nsystem\\n.')", "import pickle"),
        "compile",
        "'pickle'",
    ),
    Attempt(
        "import-submodule", handler("return 1", "import json.decoder"), "compile", "submodules"
    ),
    Attempt("dunder-import", handler("return __import__('os')"), "compile", "__import__"),
    Attempt(
        "from-import-submodule",
        handler("return decoder", "from json import decoder"),
        "error",
        "decoder",
    ),
    Attempt(
        "module-submodule-attr", handler("return json.decoder", "import json"), "error", "decoder"
    ),
    Attempt(
        "module-loader",
        handler("return getattr(json, '__loader__')", "import json"),
        "error",
        "'_'",
    ),
    Attempt(
        "collections-abc", handler("return collections.abc", "import collections"), "error", "abc"
    ),
    Attempt(
        "functools-update-wrapper",
        handler("return functools.update_wrapper", "import functools"),
        "error",
        "update_wrapper",
    ),
    Attempt(
        "singledispatch-annotation-eval",
        handler(
            "dispatch = functools.singledispatch(lambda x: x)\n"
            "def probe(x: '().__class__.__base__.__subclasses__()'):\n"
            "    return x\n"
            "dispatch.register(probe)",
            "import functools",
        ),
        "error",
        "singledispatch",
    ),
    Attempt("uuid-enum", handler("return uuid.Enum", "import uuid"), "error", "Enum"),
    Attempt("re-internals", handler("return re._compiler", "import re"), "compile", "_compiler"),
    Attempt(
        "decimal-default-context",
        handler("return decimal.DefaultContext", "import decimal"),
        "error",
        "DefaultContext",
    ),
    Attempt(
        "zoneinfo-reset-tzpath",
        handler("zoneinfo.reset_tzpath(['/'])", "import zoneinfo"),
        "error",
        "reset_tzpath",
    ),
    Attempt("uuid-getnode", handler("return uuid.getnode()", "import uuid"), "error", "getnode"),
    Attempt(
        "module-write",
        handler("math.pi = 3\nreturn math.pi", "import math"),
        "error",
        "cannot modify",
    ),
    Attempt(
        "decimal-context-write",
        handler("decimal.getcontext().prec = 2\nreturn 1", "import decimal"),
        "error",
        "cannot modify",
    ),
    # --- builtins that must not exist -------------------------------------------------------------
    Attempt("open", handler("return open('/etc/passwd').read()"), "compile", "'open'"),
    Attempt("eval", handler("return eval('1 + 1')"), "compile", "eval"),
    Attempt("exec", handler("exec('x = 1')"), "compile", "exec"),
    Attempt("compile", handler("return compile('1', 'x', 'eval')"), "compile", "'compile'"),
    Attempt("globals", handler("return globals()"), "compile", "'globals'"),
    Attempt("vars", handler("return vars(event)"), "compile", "'vars'"),
    Attempt("builtins-name", handler("return __builtins__"), "compile", "__builtins__"),
    Attempt("breakpoint", handler("breakpoint()"), "compile", "breakpoint"),
    Attempt("private-guard-name", handler("return _getattr_"), "compile", "_getattr_"),
    Attempt("fhir-transport", handler("return fhir._transport"), "compile", "_transport"),
    Attempt("print-to-file", handler("print('x', file=event)"), "error", "file="),
    Attempt(
        "async-def",
        "async def handler(fhir, event):\n    return 1\n",
        "compile",
        "AsyncFunctionDef",
    ),
    Attempt("event-write", handler("event.secrets = {'a': 'b'}"), "error", "cannot modify"),
    # --- resource exhaustion ---------------------------------------------------------------
    Attempt("huge-string", handler("return len('a' * (10 ** 10))"), "memory"),
    Attempt("huge-list", handler("return len([0] * (10 ** 9))"), "memory"),
    Attempt("huge-bytearray", handler("return len(bytearray(2 ** 33))"), "memory"),
    Attempt("growing-list", handler("x = []\nwhile True:\n    x.append('a' * 1000000)"), "memory"),
    Attempt("infinite-loop", handler("while True:\n    pass"), "timeout"),
    Attempt(
        "loop-catching-everything",
        handler(
            "while True:\n    try:\n        while True:\n            pass\n"
            "    except BaseException:\n        pass"
        ),
        "timeout",
    ),
    Attempt("bigint-bomb", handler("return 3 ** (10 ** 8) % 7"), "timeout"),
    # Squaring towards 2**40 bits either exhausts memory or the CPU budget first.
    Attempt("bigint-memory-bomb", handler("return 2 ** 2 ** 40"), "memory|timeout"),
    Attempt("recursion-bomb", handler("return handler(fhir, event)"), "error", "RecursionError"),
    Attempt(
        "deep-data",
        handler("x = []\nfor i in range(100000):\n    x = [x]\nreturn x"),
        "error",
        "JSON",
    ),
    Attempt(
        "deep-nesting-source", handler("return " + "(" * 300 + "1" + ")" * 300), "compile", "nested"
    ),
    Attempt("giant-output", handler("return 'x' * 5000000"), "error", "max_output_bytes"),
    Attempt(
        "giant-print",
        handler("for i in range(100000):\n    print('spam' * 20)\nreturn 1"),
        "success",
        "log truncated",
    ),
    Attempt("int-str-bomb", handler("return str(10 ** 100000)"), "error", "ValueError"),
    Attempt(
        "trusted-c-import-does-not-leak",
        handler(
            "today = datetime.date.today()\nreturn [today.year > 2000, repr(time)]",
            "import datetime",
        ),
        "error",
        "NameError",
    ),
    Attempt("fork", handler("return os.fork()", "import os"), "compile", "'os'"),
    Attempt("env", handler("return dict(os.environ)", "import os"), "compile", "'os'"),
]


def test_corpus_is_large_enough() -> None:
    assert len(ATTEMPTS) >= 40
    assert len({a.name for a in ATTEMPTS}) == len(ATTEMPTS)


@MODULE_LOOP
@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.name for a in ATTEMPTS])
async def test_escape_attempt_is_refused_or_contained(
    harness: BotHarness, attempt: Attempt
) -> None:
    if attempt.expect == "compile":
        with pytest.raises(BotCompileError) as refused:
            await harness.run(attempt.source)
        messages = " ".join(p.message for p in refused.value.problems)
        assert attempt.detail in messages
        # The worker refuses it too when the deploy check is bypassed.
        direct = await harness.executor.execute(ExecutionRequest(bot=make_bot(attempt.source)))
        assert direct.status == "error"
        assert "refused" in (direct.error or "")
    else:
        result = await harness.run(attempt.source)
        assert result.status in attempt.expect.split("|"), (result.error, result.output)
        seen = f"{result.error} {result.output} {result.logs}"
        assert attempt.detail in seen
    await assert_healthy(harness.executor)


@MODULE_LOOP
async def test_secrets_of_one_bot_are_invisible_to_the_next(harness: BotHarness) -> None:
    keeper = make_bot(handler("return sorted(event.secrets)"), secret=["API_KEY"])
    snoop = make_bot(handler("return [event.secrets, printed]"))
    secrets = {"API_KEY": "s3cr3t", "OTHER": "hidden"}
    first = await harness.executor.execute(ExecutionRequest(bot=keeper, secrets=secrets))
    assert first.output == ["API_KEY"]
    for _ in range(4):  # reach both workers
        second = await harness.executor.execute(ExecutionRequest(bot=snoop, secrets=secrets))
        assert second.status == "success"
        assert "s3cr3t" not in repr(second.output)
        assert second.output == [{}, ""]


@MODULE_LOOP
async def test_module_state_does_not_leak_between_executions(harness: BotHarness) -> None:
    tamper = handler("decimal.getcontext().rounding = decimal.ROUND_DOWN", "import decimal")
    result = await harness.run(tamper)
    assert result.status == "error"
    check = handler("return [str(decimal.Decimal(2) / 3), math.pi]", "import decimal\nimport math")
    for _ in range(4):
        again = await harness.run(check)
        assert again.output == ["0.6666666666666666666666666667", 3.141592653589793]


def _process_facts(pid: int) -> tuple[bytes, int, str, str]:
    """Environment, open descriptors, resource-limit table and directory of a process."""
    proc = Path(f"/proc/{pid}")
    return (
        (proc / "environ").read_bytes(),
        len(os.listdir(proc / "fd")),
        (proc / "limits").read_text(),
        os.readlink(proc / "cwd"),
    )


@MODULE_LOOP
async def test_worker_holds_no_environment_or_extra_files(harness: BotHarness) -> None:
    for pid in harness.executor.worker_pids:
        environ, fds, table, cwd = _process_facts(pid)
        assert environ == b""
        assert cwd == "/"
        # stdin/stdout/stderr (now /dev/null) plus the two channel descriptors.
        assert fds <= 5
        address_space = next(line for line in table.splitlines() if "address space" in line)
        assert str(256 * 1024 * 1024) in address_space
        open_files = next(line for line in table.splitlines() if "open files" in line)
        assert open_files.split()[3] == "16"
        core = next(line for line in table.splitlines() if "core file size" in line)
        assert core.split()[4] == "0"
