"""Attribute walks: towards frames, code, globals, builtins, subclasses and the MRO, through
computed names, ``type()`` tricks, descriptors, metaclasses, generators and exceptions."""

from __future__ import annotations

from tests.bots.escape_corpus import Attempt, handler

ATTEMPTS = [
    Attempt("dir-builtin", handler("return dir(event)"), "compile", "'dir'"),
    Attempt(
        "getattr-joined-dunder",
        handler("return getattr(event, '_' + '_class__')"),
        "error",
        "'_'",
    ),
    Attempt(
        "getattr-chain-base",
        handler("return getattr(getattr((), '__class__'), '__base__')"),
        "error",
        "'_'",
    ),
    Attempt("class-base", handler("return event.__class__.__base__"), "compile", "__class__"),
    Attempt("str-mro", handler("return str.mro()"), "error", "mro"),
    Attempt("bound-self", handler("return getattr(int.from_bytes, '__self__')"), "error", "'_'"),
    Attempt("builtin-method-self", handler("return [].append.__self__"), "compile", "__self__"),
    Attempt(
        "abc-register-on-subclass",
        handler(
            "class Mine(collections.ChainMap):\n    pass\nreturn Mine.register(int)",
            "import collections",
        ),
        "error",
        "register",
    ),
    Attempt(
        "subclass-mro",
        handler("class Mine(dict):\n    pass\nreturn Mine.mro()"),
        "error",
        "mro",
    ),
    Attempt(
        "metaclass-from-dunder",
        handler("class M(dict.__class__):\n    pass"),
        "compile",
        "__class__",
    ),
    Attempt(
        "metaclass-bound-name",
        handler("kind = {'t': dict}['t']\nclass A(kind, metaclass=kind):\n    pass"),
        "compile",
        "metaclass",
    ),
    Attempt(
        "type-bound-by-bot",
        handler("type = event.input\nreturn type"),
        "success",
        "None",
    ),
    Attempt("classmethod-func", handler("return classmethod(len).__func__"), "compile", "__func__"),
    Attempt(
        "generator-yieldfrom",
        handler("g = (x for x in [1])\nreturn getattr(g, 'gi_yieldfrom')"),
        "error",
        "gi_yieldfrom",
    ),
    Attempt(
        "generator-running",
        handler("g = (x for x in [1])\nreturn g.gi_running"),
        "error",
        "gi_running",
    ),
    Attempt(
        "generator-frame-from-function",
        handler("def gen():\n    yield 1\nreturn getattr(gen(), 'gi_frame')"),
        "error",
        "gi_frame",
    ),
    Attempt(
        "generator-send-is-fine",
        handler("def gen():\n    x = yield 1\n    yield x\ng = gen()\nnext(g)\nreturn g.send(5)"),
        "success",
        "5",
    ),
    Attempt(
        "coroutine-def",
        "async def helper():\n    pass\ndef handler(fhir, event):\n    return 1\n",
        "compile",
        "AsyncFunctionDef",
    ),
    Attempt(
        "coroutine-frame-getattr",
        handler("return getattr(event, 'cr_frame')"),
        "error",
        "cr_frame",
    ),
    Attempt(
        "with-traceback",
        handler(
            "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    return e.with_traceback(None)"
        ),
        "error",
        "with_traceback",
    ),
    Attempt(
        "exception-context",
        handler("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    return e.__context__"),
        "compile",
        "__context__",
    ),
    Attempt(
        "exception-cause-getattr",
        handler(
            "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    return getattr(e, '__cause__')"
        ),
        "error",
        "'_'",
    ),
    Attempt(
        "exception-tb-next",
        handler(
            "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    return getattr(e, 'tb_next')"
        ),
        "error",
        "tb_next",
    ),
    Attempt(
        "attribute-error-obj",
        handler(
            "try:\n    getattr(fhir, 'nothing')\nexcept AttributeError as e:\n    return e.obj"
        ),
        "error",
        "obj",
    ),
    Attempt(
        "exception-args-are-fine",
        handler("try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    return list(e.args)"),
        "success",
        "division",
    ),
    Attempt(
        "function-globals", handler("return (lambda: 0).__globals__"), "compile", "__globals__"
    ),
    Attempt(
        "function-code-getattr", handler("return getattr(handler, '__code__')"), "error", "'_'"
    ),
    Attempt("function-defaults", handler("return handler.__defaults__"), "compile", "__defaults__"),
    Attempt(
        "function-py2-globals",
        handler("return getattr(handler, 'func_globals')"),
        "error",
        "allow-list",
    ),
    Attempt(
        "getattr-passed-as-value",
        handler("return list(map(getattr, [1], ['__class__']))"),
        "error",
        "'_'",
    ),
    Attempt(
        "reduce-walk-to-class",
        handler(
            "return functools.reduce(getattr, ['__class__', '__base__'], 1)", "import functools"
        ),
        "error",
        "'_'",
    ),
    Attempt("dict-of-str", handler("return str.__dict__['format']"), "compile", "__dict__"),
    Attempt(
        "json-scanner",
        handler("return json.JSONDecoder().scan_once", "import json"),
        "error",
        "scan_once",
    ),
    Attempt(
        "json-parse-object",
        handler("return json.JSONDecoder().parse_object", "import json"),
        "error",
        "parse_object",
    ),
    Attempt(
        "regex-scanner",
        handler("return re.compile('a').scanner('a')", "import re"),
        "error",
        "scanner",
    ),
    Attempt(
        "dict-view-mapping",
        handler("return {'a': 1}.keys().mapping"),
        "error",
        "mapping",
    ),
    Attempt(
        "zoneinfo-from-file",
        handler("return zoneinfo.ZoneInfo.from_file(event)", "import zoneinfo"),
        "error",
        "from_file",
    ),
    Attempt(
        "namedtuple-foreign-module",
        handler(
            "P = collections.namedtuple('P', 'a', module='json')\nreturn P(1).a",
            "import collections",
        ),
        "error",
        "allow-list",
    ),
    Attempt(
        "namedtuple-dunder-field",
        handler("return collections.namedtuple('P', ['__class__'])", "import collections"),
        "error",
        "underscore",
    ),
    Attempt(
        "property-is-not-a-builtin",
        handler("class A:\n    value = property(lambda self: 7)\nreturn A().value"),
        "error",
        "NameError",
    ),
    Attempt(
        "ellipsis-class",
        handler("return getattr(Ellipsis, '__class__')"),
        "error",
        "'_'",
    ),
    Attempt(
        "notimplemented-attribute",
        handler("return NotImplemented.something"),
        "error",
        "allow-list",
    ),
    Attempt(
        "module-proxy-dict",
        handler("return getattr(json, '__dict__')", "import json"),
        "error",
        "'_'",
    ),
    Attempt(
        "module-proxy-members",
        handler("return getattr(json, 'proxy_members')", "import json"),
        "error",
        "proxy_members",
    ),
    Attempt(
        "event-slots-write",
        handler("event.input = 'changed'"),
        "error",
        "cannot modify",
    ),
    Attempt(
        "isinstance-with-bound-type",
        handler("return [isinstance(event, dict), issubclass(bool, int)]"),
        "success",
        "True",
    ),
]
