"""The namespace restricted bot code runs in: guard functions, builtins and bot-facing objects.

:func:`build_globals` returns the globals of one execution. RestrictedPython rewrote the bot's
source so that attribute reads call ``_getattr_``, item reads ``_getitem_``, iteration
``_getiter_``, writes ``_write_``, ``print`` ``_print_`` and ``import`` ``__import__``; this
module supplies those functions. Runs inside worker processes.
"""

from __future__ import annotations

import builtins
import operator
import sys
import types
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, NoReturn

from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from fhirbots.bots._allowlist import (
    BOT_MODULE_NAME,
    CLASS_ATTRIBUTES,
    INSTANCE_ATTRIBUTES,
    attribute_allowed,
)
from fhirbots.bots._modules import ModuleProxy
from fhirbots.bots.compile import BOT_API_MODULE
from fhirbots.bots.errors import BotError

__all__ = [
    "BOT_MODULE_NAME",
    "FHIR_ERROR_NAME",
    "BotEvent",
    "BotFhirClient",
    "BotFhirError",
    "BotLogger",
    "LogBuffer",
    "SandboxNamespace",
    "SandboxViolation",
    "guarded_getattr",
    "guarded_write",
    "json_default",
]

MAX_ERROR_CHARS = 4000
"""Longest error message kept from a bot's exception; the rest is cut."""

_DENIED_ATTRIBUTES = frozenset(
    {
        # frames, code and tracebacks reach the globals of trusted code
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "cr_origin",
        "ag_frame",
        "ag_code",
        "ag_await",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "f_trace",
        "tb_frame",
        "tb_next",
        # the class hierarchy, a step towards object.__subclasses__()
        "mro",
    }
)

_STR_FORMAT = frozenset({"format", "format_map"})
"""str.format resolves "{0.__class__}" fields with the unguarded getattr."""

_DENIED_VALUE_TYPES = (
    types.ModuleType,
    types.FrameType,
    types.CodeType,
    types.TracebackType,
)

_DANGEROUS_BUILTINS = frozenset(
    id(getattr(builtins, name))
    for name in (
        "open",
        "eval",
        "exec",
        "compile",
        "__import__",
        "getattr",
        "setattr",
        "delattr",
        "globals",
        "locals",
        "vars",
        "breakpoint",
        "input",
    )
)
"""Identities of builtins that must never be handed to bot code through an attribute."""

_MISSING = object()


class SandboxViolation(BotError, AttributeError):
    """Raised into bot code when it reaches for something the sandbox withholds."""


def _refuse(message: str) -> NoReturn:
    raise SandboxViolation(message)


def guarded_getattr(obj: Any, name: str, default: Any = _MISSING) -> Any:
    """``getattr`` for bot code: only attributes on the allow-list (:mod:`._allowlist`).

    Private names, frame and generator internals and ``str.format`` are refused with their
    own message; any other attribute must be defined by the bot's own classes or listed for
    the class that defines it. A value that is a module, frame, code object, traceback or a
    dangerous builtin is refused as well, whatever the lists say.
    """
    if not isinstance(name, str):
        raise TypeError("attribute name must be a string")
    if name.startswith("_"):
        _refuse(f"attribute {name!r} is not available in the bot sandbox (starts with '_')")
    if name in _DENIED_ATTRIBUTES:
        _refuse(f"attribute {name!r} is not available in the bot sandbox")
    if name in _STR_FORMAT and (
        isinstance(obj, str) or (isinstance(obj, type) and issubclass(obj, str))
    ):
        _refuse(f"str.{name}() is not available in the bot sandbox; use f-strings or %")
    if not isinstance(obj, ModuleProxy) and not attribute_allowed(obj, name):
        if default is not _MISSING:  # as if it did not exist
            return default
        kind = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        _refuse(
            f"attribute {name!r} of {kind} is not available in the bot sandbox "
            "(not on its allow-list)"
        )
    try:
        value = getattr(obj, name)
    except AttributeError:
        if default is _MISSING:
            raise
        return default
    if isinstance(value, _DENIED_VALUE_TYPES) or id(value) in _DANGEROUS_BUILTINS:
        _refuse(f"attribute {name!r} leads out of the bot sandbox")
    return value


def guarded_hasattr(obj: Any, name: str) -> bool:
    """``hasattr`` through :func:`guarded_getattr`."""
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


def guarded_getitem(obj: Any, key: Any) -> Any:
    """Item and slice reads (``obj[key]``)."""
    return obj[key]


class _ReadOnly:
    """What ``_write_`` hands back for objects bot code may not modify."""

    __slots__ = ("_ob",)

    _ob: object

    def __init__(self, ob: object) -> None:
        object.__setattr__(self, "_ob", ob)

    def _deny(self, *_args: object) -> NoReturn:
        kind = type(self._ob).__name__
        _refuse(
            f"cannot modify a {kind} object in the bot sandbox "
            "(only dicts, lists, sets and instances of the bot's own classes)"
        )

    __setattr__ = _deny
    __delattr__ = _deny
    __setitem__ = _deny
    __delitem__ = _deny


_WRITABLE_TYPES = frozenset({dict, list, set, bytearray})


def guarded_write(ob: Any) -> Any:
    """``_write_``: let bot code modify plain containers and its own objects only."""
    cls = type(ob)
    if cls in _WRITABLE_TYPES:
        return ob
    if getattr(cls, "__module__", None) == BOT_MODULE_NAME and not isinstance(ob, type):
        return ob
    return _ReadOnly(ob)


_INPLACE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "^=": operator.ixor,
    "|=": operator.ior,
    "@=": operator.imatmul,
}


def guarded_inplacevar(op: str, target: Any, value: Any) -> Any:
    """``x += y`` and friends."""
    try:
        function = _INPLACE_OPERATORS[op]
    except KeyError:
        _refuse(f"operator {op!r} is not available in the bot sandbox")
    return function(target, value)


def guarded_apply(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls with ``*args``/``**kwargs`` unpacking."""
    return function(*args, **kwargs)


class LogBuffer:
    """Captured ``print`` and ``logger`` text of one execution, capped in size."""

    __slots__ = ("_limit", "_parts", "_size", "truncated")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[str] = []
        self._size = 0
        self.truncated = False

    def write(self, text: str) -> None:
        """Append ``text``, or as much of it as still fits."""
        if self.truncated:
            return
        room = self._limit - self._size
        if len(text) > room:
            text = text[:room]
            self.truncated = True
        self._parts.append(text)
        self._size += len(text)

    def text(self) -> str:
        """Everything captured, with a marker if some was dropped."""
        body = "".join(self._parts)
        if self.truncated:
            body += f"\n[log truncated at {self._limit} characters]\n"
        return body


class _Printer:
    """Target of RestrictedPython's ``print`` rewrite (``_print._call_print``)."""

    __slots__ = ("_buffer",)

    def __init__(self, buffer: LogBuffer) -> None:
        self._buffer = buffer

    def _call_print(
        self, *objects: object, sep: str | None = " ", end: str | None = "\n", **kwargs: Any
    ) -> None:
        if kwargs.get("file") is not None:
            _refuse("print(file=...) is not available in the bot sandbox")
        sep = " " if sep is None else str(sep)
        end = "\n" if end is None else str(end)
        self._buffer.write(sep.join(str(o) for o in objects) + end)

    def __call__(self) -> str:
        return self._buffer.text()


class BotLogger:
    """The ``logger`` a bot sees; lines go to the execution's captured log."""

    __slots__ = ("_buffer",)

    def __init__(self, buffer: LogBuffer) -> None:
        self._buffer = buffer

    def _log(self, level: str, message: object, args: tuple[object, ...]) -> None:
        text = str(message)
        if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            text = text % args[0]  # as the logging module does: '%(name)s' with a mapping
        elif args:
            text = text % args
        self._buffer.write(f"{level} {text}\n")

    def debug(self, message: object, *args: object) -> None:
        """Log at DEBUG level (``%``-style arguments)."""
        self._log("DEBUG", message, args)

    def info(self, message: object, *args: object) -> None:
        """Log at INFO level."""
        self._log("INFO", message, args)

    def warning(self, message: object, *args: object) -> None:
        """Log at WARNING level."""
        self._log("WARNING", message, args)

    def error(self, message: object, *args: object) -> None:
        """Log at ERROR level."""
        self._log("ERROR", message, args)


FHIR_ERROR_NAME = "FhirError"
"""The name bots know :class:`BotFhirError` by: their global, ``from fhirbots import FhirError``
and their tracebacks. Bot code is written against it (see the bot author's guide)."""


class BotFhirError(BotError):
    """A FHIR call made by the bot failed; ``status`` and ``outcome`` say why.

    Bots see it as ``FhirError`` (:data:`FHIR_ERROR_NAME`). Its own name keeps it apart from
    :class:`fhirbots.engine.errors.FhirError`, the engine's error answered to API clients.
    """

    def __init__(self, message: str, status: int, outcome: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


FhirTransport = Callable[[str, dict[str, Any]], dict[str, Any]]
"""Sends one FHIR call to the engine and returns its reply message."""


class BotFhirClient:
    """The ``fhir`` argument of a bot's handler. The engine performs every call."""

    __slots__ = ("_transport",)

    def __init__(self, transport: FhirTransport) -> None:
        self._transport = transport

    def _call(self, method: str, args: dict[str, Any]) -> Any:
        reply = self._transport(method, args)
        if reply.get("ok"):
            return reply.get("value")
        raise BotFhirError(
            str(reply.get("message", "FHIR call failed")),
            int(reply.get("status", 500)),
            dict(reply.get("outcome") or {}),
        )

    def read(self, resource_type: str, resource_id: str) -> Any:
        """Read a resource by type and id."""
        return self._call("read", {"resource_type": resource_type, "resource_id": resource_id})

    def create(self, resource: Mapping[str, Any]) -> Any:
        """Create a resource; returns it as stored (with id and meta)."""
        return self._call("create", {"resource": resource})

    def update(self, resource: Mapping[str, Any]) -> Any:
        """Update (or create with a given id) a resource."""
        return self._call("update", {"resource": resource})

    def patch(self, resource_type: str, resource_id: str, patch: Iterable[Any]) -> Any:
        """Apply a JSON Patch (list of operations) to a resource."""
        return self._call(
            "patch",
            {"resource_type": resource_type, "resource_id": resource_id, "patch": list(patch)},
        )

    def delete(self, resource_type: str, resource_id: str) -> Any:
        """Delete a resource."""
        return self._call("delete", {"resource_type": resource_type, "resource_id": resource_id})

    def search(self, resource_type: str, params: Mapping[str, Any] | None = None) -> Any:
        """Search; returns a searchset Bundle."""
        return self._call("search", {"resource_type": resource_type, "params": dict(params or {})})

    def search_one(self, resource_type: str, params: Mapping[str, Any] | None = None) -> Any:
        """First resource a search finds, or ``None``."""
        bundle = self.search(resource_type, params)
        for entry in bundle.get("entry") or []:
            if "resource" in entry:
                return entry["resource"]
        return None

    def transaction(self, bundle: Mapping[str, Any]) -> Any:
        """Run a transaction or batch Bundle; returns the response Bundle."""
        return self._call("transaction", {"bundle": bundle})


class BotEvent:
    """The ``event`` argument of a bot's handler (read-only)."""

    __slots__ = (
        "bot",
        "content_type",
        "execution_id",
        "idempotency_key",
        "input",
        "requester",
        "secrets",
        "trace_id",
    )

    def __init__(self, fields: Mapping[str, Any]) -> None:
        for name in self.__slots__:
            object.__setattr__(self, name, fields.get(name))

    def __setattr__(self, name: str, value: object) -> None:
        _refuse("event is read-only")

    def __repr__(self) -> str:
        return f"<BotEvent execution={getattr(self, 'execution_id', None)!r}>"


CLASS_ATTRIBUTES.update(
    {
        BotFhirClient: frozenset(
            {"read", "create", "update", "patch", "delete", "search", "search_one", "transaction"}
        ),
        BotEvent: frozenset(BotEvent.__slots__),
        BotLogger: frozenset({"debug", "info", "warning", "error"}),
    }
)
INSTANCE_ATTRIBUTES[BotFhirError] = frozenset({"status", "outcome"})
"""The bot-facing objects of this module join the allow-list (it cannot import them)."""


def _import_guard(proxies: Mapping[str, ModuleProxy]) -> Callable[..., ModuleProxy]:
    """The ``__import__`` of bot code.

    Bot ``import`` statements were checked at compile time, so a name outside the allow-list
    arrives here only from trusted C code running on the bot's frame (``date.today()``
    imports ``time`` through ``PyImport_Import``, which calls the *current* globals'
    ``__import__`` and then takes the module from ``sys.modules`` itself, ignoring what we
    return). Such a caller gets an empty proxy when the module is already loaded (workers
    pre-load those modules); nothing else is ever imported on a bot's behalf.
    """

    def guarded_import(name: str, *context: object, **named: object) -> ModuleProxy:
        # CPython passes (name, globals, locals, fromlist, level) positionally.
        level = context[3] if len(context) > 3 else named.get("level", 0)
        proxy = proxies.get(name) if level == 0 else None
        if proxy is not None:
            return proxy
        if level == 0 and name in sys.modules:
            return ModuleProxy(name, {})
        allowed = ", ".join(sorted(set(proxies) - {BOT_API_MODULE}))
        raise ImportError(
            f"import of {name!r} is not allowed in the bot sandbox (allowed: {allowed}); "
            f"an operator can allow it with SandboxPolicy.with_modules({name!r})"
        )

    return guarded_import


_SAFE_BUILTIN_NAMES = (
    "abs",
    "all",
    "any",
    "ascii",
    "bin",
    "bool",
    "bytearray",
    "bytes",
    "callable",
    "chr",
    "complex",
    "dict",
    "divmod",
    "enumerate",
    "filter",
    "float",
    "format",
    "frozenset",
    "hash",
    "hex",
    "int",
    "isinstance",
    "issubclass",
    "iter",
    "len",
    "list",
    "map",
    "max",
    "min",
    "next",
    "oct",
    "ord",
    "pow",
    "range",
    "repr",
    "reversed",
    "round",
    "set",
    "slice",
    "sorted",
    "str",
    "sum",
    "tuple",
    "zip",
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "BaseException",
    "EOFError",
    "Exception",
    "FloatingPointError",
    "ImportError",
    "IndexError",
    "KeyError",
    "LookupError",
    "MemoryError",
    "NameError",
    "NotImplementedError",
    "OverflowError",
    "RecursionError",
    "RuntimeError",
    "StopIteration",
    "TypeError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "UnicodeError",
    "ValueError",
    "ZeroDivisionError",
    "False",
    "None",
    "True",
    "NotImplemented",
    "Ellipsis",
)


def _safe_builtins() -> dict[str, Any]:
    table = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
    table["getattr"] = guarded_getattr
    table["hasattr"] = guarded_hasattr
    table["__build_class__"] = builtins.__build_class__
    return table


class SandboxNamespace:
    """Builds the globals of executions around one table of safe builtins and modules."""

    __slots__ = ("_builtins", "_proxies")

    def __init__(self, proxies: Mapping[str, ModuleProxy]) -> None:
        self._builtins = _safe_builtins()
        self._proxies = dict(proxies)

    def build_globals(self, fhir_error: type[BotFhirError], buffer: LogBuffer) -> dict[str, Any]:
        """Fresh globals for one execution.

        Besides the guards, a bot gets ``logger`` and ``FhirError`` as globals, and can also
        import them (``from fhirbots import FhirError, logger``) so that linters see them.
        """
        printer = _Printer(buffer)
        logger = BotLogger(buffer)
        api = ModuleProxy(BOT_API_MODULE, {FHIR_ERROR_NAME: fhir_error, "logger": logger})
        table = dict(self._builtins)  # per execution: CPython needs a real dict; none is shared
        table["__import__"] = _import_guard({**self._proxies, BOT_API_MODULE: api})
        return {
            "__builtins__": table,
            "__name__": BOT_MODULE_NAME,
            "__metaclass__": type,
            "_getattr_": guarded_getattr,
            "_getitem_": guarded_getitem,
            "_getiter_": iter,
            "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
            "_unpack_sequence_": guarded_unpack_sequence,
            "_write_": guarded_write,
            "_inplacevar_": guarded_inplacevar,
            "_apply_": guarded_apply,
            "_print_": lambda *_args: printer,
            "logger": logger,
            FHIR_ERROR_NAME: fhir_error,
        }


def json_default(value: Any) -> Any:
    """Serialise the few non-JSON values a bot commonly returns."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
