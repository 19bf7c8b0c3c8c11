"""Process-wide state a bot could leave to the next one: ABC registrations, class and module
attributes, builtins, the decimal context, caches. Each must be refused (what an execution
may change, such as its decimal context, is reset before the next)."""

from __future__ import annotations

from tests.bots.escape_corpus import Attempt, handler

_IMPORTS = (
    "import collections\nimport decimal\nimport json\nimport math\nimport string\nimport uuid"
)
_IMPORTS += "\nimport zoneinfo\nimport functools\nimport datetime"


def _refused(name: str, body: str, detail: str) -> Attempt:
    return Attempt(f"state-{name}", handler(body, _IMPORTS), "error", detail)


ATTEMPTS = [
    _refused("abc-register", "collections.ChainMap.register(int)", "register"),
    _refused("template-delimiter", "string.Template.delimiter = '%'", "cannot modify"),
    _refused("encoder-separator", "json.JSONEncoder.item_separator = ';'", "cannot modify"),
    _refused("module-delete", "del math.pi", "cannot modify"),
    _refused("module-function", "json.dumps = None", "cannot modify"),
    _refused("builtin-type-method", "str.upper = None", "cannot modify"),
    _refused("builtin-dict-method", "dict.get = None", "cannot modify"),
    _refused("counter-method", "collections.Counter.most_common = None", "cannot modify"),
    _refused("date-max", "datetime.date.max = datetime.date.min", "cannot modify"),
    _refused("zoneinfo-clear-cache", "zoneinfo.ZoneInfo.clear_cache()", "clear_cache"),
    _refused("zoneinfo-key", "zoneinfo.ZoneInfo('UTC').key = 'x'", "cannot modify"),
    _refused("uuid-namespace", "uuid.NAMESPACE_DNS.int = 0", "cannot modify"),
    _refused("partial-func", "functools.partial(max).func = min", "cannot modify"),
    _refused("fhir-method", "fhir.read = None", "cannot modify"),
    _refused("logger-method", "logger.info = None", "cannot modify"),
    _refused("fhir-error-class", "FhirError.status = 1", "cannot modify"),
    _refused(
        "decimal-traps-dict", "decimal.getcontext().traps[decimal.Inexact] = True", "cannot modify"
    ),
    _refused("regex-flag", "import re\nre.IGNORECASE.value = 0", "cannot modify"),
    Attempt(
        "state-decimal-context-method",
        handler("decimal.getcontext().clear_traps()\nreturn str(decimal.Decimal(1) / 0)", _IMPORTS),
        "success",
        "Infinity",
    ),
]
