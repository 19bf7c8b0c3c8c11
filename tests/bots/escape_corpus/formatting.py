"""Format strings and templating: every path from a template to attribute access."""

from __future__ import annotations

from tests.bots.escape_corpus import Attempt, handler

ATTEMPTS = [
    Attempt(
        "userstring-format",
        handler("return collections.UserString('{0.__class__}').format(1)", "import collections"),
        "error",
        "UserString",
    ),
    Attempt(
        "userstring-format-map",
        handler(
            "return collections.UserString('{x.__class__}').format_map({'x': 1})",
            "import collections",
        ),
        "error",
        "UserString",
    ),
    Attempt(
        "userstring-from-import",
        handler("return UserString('{0}').format(1)", "from collections import UserString"),
        "error",
        "UserString",
    ),
    Attempt(
        "userdict-subclass",
        handler("return collections.UserDict", "import collections"),
        "error",
        "UserDict",
    ),
    Attempt(
        "format-computed-name",
        handler("return getattr('{0.__class__}', 'for' + 'mat')(1)"),
        "error",
        "str.format",
    ),
    Attempt(
        "format-with-default",
        handler("return getattr('{0.__class__}', 'format', None)"),
        "error",
        "str.format",
    ),
    Attempt("hasattr-format", handler("return hasattr('x', 'format')"), "success", "False"),
    Attempt(
        "str-type-from-dict",
        handler("kinds = {'s': str}\nreturn kinds['s'].format('{0.__class__}', 1)"),
        "error",
        "str.format",
    ),
    Attempt(
        "format-map-unbound",
        handler("return str.format_map('{x.__class__}', {'x': 1})"),
        "error",
        "str.format_map",
    ),
    Attempt(
        "partial-of-format",
        handler("return functools.partial(str.format, '{0.__class__}')(1)", "import functools"),
        "error",
        "str.format",
    ),
    Attempt(
        "map-over-format",
        handler("return list(map(str.format, ['{0.__class__}'], [1]))"),
        "error",
        "str.format",
    ),
    Attempt(
        "reduce-getattr-format",
        handler(
            "return functools.reduce(getattr, ['format'], '{0.__class__}')(1)", "import functools"
        ),
        "error",
        "str.format",
    ),
    Attempt(
        "str-subclass-format-map",
        handler("class S(str):\n    pass\nreturn getattr(S('x'), 'format_map')({})"),
        "error",
        "str.format_map",
    ),
    Attempt(
        "bound-format-in-container",
        handler("return {'f': 'x'.format}"),
        "error",
        "str.format",
    ),
    Attempt(
        "string-formatter-from-import",
        handler("return Formatter().format('{0.__class__}', 1)", "from string import Formatter"),
        "error",
        "Formatter",
    ),
    Attempt(
        "string-formatter-getattr",
        handler("return getattr(string, 'Formatter')", "import string"),
        "error",
        "Formatter",
    ),
    Attempt(
        "template-dotted-placeholder",
        handler("return string.Template('${x.__class__}').substitute(x=1)", "import string"),
        "error",
        "Invalid placeholder",
    ),
    Attempt(
        "template-subclass-dotted-idpattern",
        handler(
            "class T(string.Template):\n"
            "    idpattern = r'(?a:[_a-z][._a-z0-9]*)'\n"
            "return T('$x.__class__').substitute(x=1)",
            "import string",
        ),
        "error",
        "KeyError",
    ),
    Attempt(
        "template-object-is-only-str",
        handler("return string.Template('$x').safe_substitute(x=event)", "import string"),
        "success",
        "BotEvent",
    ),
    Attempt(
        "percent-mapping-is-only-lookup",
        handler("return '%(x)s' % collections.ChainMap({'x': 'plain'})", "import collections"),
        "success",
        "plain",
    ),
    Attempt(
        "percent-dunder-key",
        handler("return '%(__class__)s' % {'__class__': 'just a key'}"),
        "success",
        "just a key",
    ),
    Attempt(
        "percent-object-as-mapping",
        handler("return '%(__class__)s' % event"),
        "error",
        "mapping",
    ),
    Attempt("percent-repr", handler("return '%r' % (fhir,)"), "success", "BotFhirClient"),
    Attempt(
        "bytes-percent-mapping",
        handler("return ('%(x)s' % {'x': 1}).upper()"),
        "success",
        "1",
    ),
    Attempt(
        "format-builtin-field-spec",
        handler("return format(event, '{0.__class__}')"),
        "error",
        "format",
    ),
    Attempt(
        "format-builtin-datetime",
        handler("return format(datetime.date(2024, 1, 2), '%Y {0.__class__}')", "import datetime"),
        "success",
        "2024 {0.__class__}",
    ),
    Attempt(
        "format-builtin-decimal",
        handler("return format(decimal.Decimal('1.5'), '{0.__class__}')", "import decimal"),
        "error",
        "ValueError",
    ),
    Attempt(
        "fstring-nested-spec",
        handler("spec = '{0.__class__}'\nreturn f'{1:{spec}}'"),
        "error",
        "ValueError",
    ),
    Attempt("fstring-ascii", handler("return f'{event!a}'"), "success", "BotEvent"),
    Attempt("fstring-private", handler("return f'{fhir._transport}'"), "compile", "_transport"),
    Attempt(
        "logger-percent-mapping",
        handler("logger.info('%(x)s', {'x': 'logged'})\nreturn printed"),
        "success",
        "INFO logged",
    ),
    Attempt(
        "logger-brace-template",
        handler("logger.info('{0.__class__}', 1)"),
        "error",
        "not all arguments",
    ),
    Attempt(
        "json-default-str",
        handler("return json.dumps(event, default=str)", "import json"),
        "success",
        "BotEvent",
    ),
    Attempt(
        "strftime-braces",
        handler("return datetime.date(2024, 1, 2).strftime('{0.__class__}')", "import datetime"),
        "success",
        "{0.__class__}",
    ),
    Attempt(
        "re-sub-template",
        handler("return re.sub('(a)', r'\\g<1>{0.__class__}', 'a')", "import re"),
        "success",
        "a{0.__class__}",
    ),
    Attempt(
        "match-expand",
        handler("return re.match('(a)', 'a').expand(r'\\1{0.__globals__}')", "import re"),
        "success",
        "a{0.__globals__}",
    ),
    Attempt(
        "dunder-mod-method",
        handler("return '%s'.__mod__(1)"),
        "compile",
        "__mod__",
    ),
]
