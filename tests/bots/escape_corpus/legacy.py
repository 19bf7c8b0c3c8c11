"""The first corpus: attribute walks, format strings, frames, imports, builtins and exhaustion
(the attempts the sandbox was built against)."""

from __future__ import annotations

from tests.bots.escape_corpus import Attempt, handler

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
