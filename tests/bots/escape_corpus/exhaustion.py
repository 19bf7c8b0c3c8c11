"""Exhausting the host: regex backtracking, memory and CPU bombs, recursion, endless
iteration, floods of logs, output and FHIR calls. Each is bounded by a limit of the policy."""

from __future__ import annotations

from tests.bots.escape_corpus import Attempt, handler

ATTEMPTS = [
    Attempt(
        "regex-catastrophic-backtracking",
        handler("return bool(re.match('(a+)+$', 'a' * 64 + 'b'))", "import re"),
        "timeout",
    ),
    Attempt(
        "regex-alternation-backtracking",
        handler("return bool(re.match('(a|aa)+$', 'a' * 80 + 'b'))", "import re"),
        "timeout",
    ),
    Attempt(
        "regex-findall-backtracking",
        handler("return re.findall('(x+x+)+y', 'x' * 60)", "import re"),
        "timeout",
    ),
    Attempt("bigint-tower", handler("return 10 ** 10 ** 8 % 7"), "timeout|memory"),
    Attempt("huge-bytes", handler("return len(bytes(10 ** 10))"), "memory"),
    Attempt("huge-range-list", handler("return len(list(range(10 ** 10)))"), "memory"),
    Attempt("huge-dict", handler("return len({i: i for i in range(10 ** 9)})"), "memory|timeout"),
    Attempt(
        "endless-repeat",
        handler("return len(list(itertools.repeat(1)))", "import itertools"),
        "memory",
    ),
    Attempt(
        "endless-count-sorted",
        handler("return sorted(itertools.count())", "import itertools"),
        "memory",
    ),
    Attempt(
        "endless-iteration",
        handler("for x in itertools.count():\n    pass", "import itertools"),
        "timeout",
    ),
    Attempt(
        "factorial-bomb", handler("return math.factorial(10 ** 7) % 7", "import math"), "timeout"
    ),
    Attempt(
        "decimal-overflow",
        handler("return str(decimal.Decimal(10) ** (10 ** 9))", "import decimal"),
        "error",
        "Overflow",
    ),
    Attempt(
        "json-deep-parse",
        handler("return json.loads('[' * 100000 + ']' * 100000)", "import json"),
        "error",
        "RecursionError",
    ),
    Attempt(
        "json-deep-dump",
        handler(
            "x = []\nfor i in range(100000):\n    x = [x]\nreturn json.dumps(x)", "import json"
        ),
        "error",
        "RecursionError",
    ),
    Attempt(
        "mutual-recursion",
        handler(
            "return ping(0)",
            "def ping(n):\n    return pong(n + 1)\ndef pong(n):\n    return ping(n + 1)",
        ),
        "error",
        "RecursionError",
    ),
    Attempt(
        "recursion-caught-and-retried",
        handler(
            "def deep(n):\n    return deep(n + 1)\n"
            "for i in range(50):\n    try:\n        deep(0)\n"
            "    except RecursionError:\n        pass\n"
            "return 'survived'"
        ),
        "success",
        "survived",
    ),
    Attempt(
        "log-flood-one-line",
        handler("logger.info('x' * 10 ** 7)\nreturn 1"),
        "success",
        "log truncated",
    ),
    # Serialising near the memory ceiling, the JSON encoder may crash the worker: contained.
    Attempt("output-flood", handler("return ['x'] * 10 ** 6"), "error|killed"),
    Attempt(
        "fhir-call-flood",
        handler(
            "status = None\nfor i in range(1100):\n    try:\n        fhir.read('Patient', 'none')\n"
            "    except FhirError as e:\n        status = e.status\nreturn status"
        ),
        "success",
        "429",
    ),
    Attempt(
        "bundle-over-call-cap",
        handler(
            "entry = [{'request': {'method': 'GET', 'url': 'Patient/x'}}] * 1500\n"
            "fhir.transaction({'resourceType': 'Bundle', 'type': 'batch', 'entry': entry})"
        ),
        "error",
        "max_fhir_calls",
    ),
    Attempt(
        "huge-fhir-request",
        handler("fhir.create({'resourceType': 'Basic', 'x': 'a' * 20000000})"),
        "error|killed",
    ),
    Attempt(
        "string-growth-loop",
        handler("s = 'a'\nwhile True:\n    s = s + s"),
        "memory",
    ),
    Attempt(
        "exception-loop-swallowing-memory",
        handler(
            "x = []\nwhile True:\n    try:\n        x.append(bytearray(10 ** 7))\n"
            "    except MemoryError:\n        x = []"
        ),
        "timeout|memory",
    ),
    Attempt("thread-import", handler("return 1", "import _thread"), "compile", "_thread"),
    Attempt("signal-import", handler("return 1", "import signal"), "compile", "signal"),
    Attempt(
        "pow-modular-bomb",
        handler("return pow(3, 10 ** 60, 10 ** 100000) % 7"),
        "timeout",
    ),
]
