"""Modules: imports outside the allow-list, members outside each module's list, module
internals that lead to ``sys.modules``, pickling hooks and the internals of decimal, datetime
and json."""

from __future__ import annotations

from tests.bots.escape_corpus import Attempt, handler


def _import(module: str) -> Attempt:
    return Attempt(f"import-{module}", handler("return 1", f"import {module}"), "compile", module)


ATTEMPTS = [
    *(
        _import(module)
        for module in (
            "gc",
            "inspect",
            "threading",
            "_thread",
            "signal",
            "io",
            "pathlib",
            "sqlite3",
            "asyncio",
            "copy",
            "copyreg",
            "marshal",
            "types",
            "operator",
            "abc",
            "codecs",
            "tempfile",
            "resource",
            "multiprocessing",
            "logging",
            "random",
            "ssl",
            "posix",
        )
    ),
    Attempt("star-import", handler("return 1", "from json import *"), "compile", "*"),
    Attempt(
        "fhirbots-engine", handler("return 1", "import fhirbots.engine"), "compile", "submodules"
    ),
    Attempt(
        "fhirbots-api-member",
        handler("return engine", "from fhirbots import engine"),
        "error",
        "engine",
    ),
    Attempt(
        "fhirbots-api-attribute",
        handler("return fhirbots.bots", "import fhirbots"),
        "error",
        "bots",
    ),
    Attempt(
        "import-inside-handler",
        handler("import os\nreturn os.getcwd()"),
        "compile",
        "'os'",
    ),
    Attempt(
        "json-scanner-module", handler("return json.scanner", "import json"), "error", "scanner"
    ),
    Attempt(
        "json-encoder-module", handler("return json.encoder", "import json"), "error", "encoder"
    ),
    Attempt("json-load", handler("return json.load(event)", "import json"), "error", "load"),
    Attempt("json-dump", handler("return json.dump", "import json"), "error", "dump"),
    Attempt("decimal-sys", handler("return decimal.sys", "import decimal"), "error", "sys"),
    Attempt(
        "decimal-setcontext",
        handler("return decimal.setcontext", "import decimal"),
        "error",
        "setcontext",
    ),
    Attempt("datetime-sys", handler("return datetime.sys", "import datetime"), "error", "sys"),
    Attempt(
        "datetime-c-module",
        handler("return datetime._datetime", "import datetime"),
        "compile",
        "_datetime",
    ),
    Attempt(
        "re-sre-compile", handler("return re.sre_compile", "import re"), "error", "sre_compile"
    ),
    Attempt("re-purge", handler("return re.purge()", "import re"), "error", "purge"),
    Attempt("re-enum", handler("return re.enum", "import re"), "error", "enum"),
    Attempt("string-re", handler("return string._re", "import string"), "compile", "_re"),
    Attempt(
        "zoneinfo-common",
        handler("return zoneinfo._common", "import zoneinfo"),
        "compile",
        "_common",
    ),
    Attempt(
        "zoneinfo-tzpath", handler("return zoneinfo.TZPATH", "import zoneinfo"), "error", "TZPATH"
    ),
    Attempt(
        "zoneinfo-available",
        handler("return zoneinfo.available_timezones()", "import zoneinfo"),
        "error",
        "available_timezones",
    ),
    Attempt("uuid-os", handler("return uuid.os", "import uuid"), "error", "os"),
    Attempt("uuid-uuid1", handler("return uuid.uuid1()", "import uuid"), "error", "uuid1"),
    Attempt(
        "functools-rlock", handler("return functools.RLock", "import functools"), "error", "RLock"
    ),
    Attempt(
        "functools-wraps",
        handler("return functools.wraps(handler)", "import functools"),
        "error",
        "wraps",
    ),
    Attempt(
        "collections-sys", handler("return collections.sys", "import collections"), "error", "sys"
    ),
    Attempt(
        "statistics-random",
        handler("return statistics.random", "import statistics"),
        "error",
        "random",
    ),
    Attempt(
        "math-loader", handler("return math.__loader__", "import math"), "compile", "__loader__"
    ),
    Attempt(
        "function-module-globals",
        handler("return getattr(json.dumps, '__globals__')", "import json"),
        "error",
        "'_'",
    ),
    Attempt(
        "reduce-hook",
        handler("return decimal.Decimal(1).__reduce__()", "import decimal"),
        "compile",
        "__reduce__",
    ),
    Attempt(
        "reduce-ex-getattr",
        handler("return getattr(decimal.Decimal(1), '__reduce_ex__')(2)", "import decimal"),
        "error",
        "'_'",
    ),
    Attempt(
        "total-ordering-on-stdlib",
        handler(
            "return functools.total_ordering(string.Template)", "import functools\nimport string"
        ),
        "error",
        "ordering",
    ),
    Attempt(
        "lazy-import-by-trusted-code",
        handler("return 'x'.encode('cp1140').hex()"),
        "success",
        "a7",
    ),
    Attempt(
        "builtins-dict",
        handler("return __builtins__['__import__']('os')"),
        "compile",
        "__builtins__",
    ),
]
