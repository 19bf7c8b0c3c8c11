"""A bot worker process: runs restricted bot code on behalf of the engine.

Started by :mod:`fhirbots.bots._pool` as a fresh interpreter (``python -I``, empty environment, no
inherited file descriptors but its channel). It receives its policy, applies resource limits
to itself, pre-imports the allowed modules, says ``ready`` and then serves executions one at a
time. Compiled code is cached by source digest. FHIR calls travel back over the channel; the
worker itself holds no credentials, sockets or files.
"""

from __future__ import annotations

import abc
import contextlib
import decimal
import importlib
import math
import os
import resource
import sys
import traceback
from collections import OrderedDict
from types import CodeType, FunctionType
from typing import Any

import orjson

from fhirbots.bots._modules import build_proxies
from fhirbots.bots._protocol import ChannelClosedError, encode, read_frame, write_frame
from fhirbots.bots._sandbox import (
    FHIR_ERROR_NAME,
    MAX_ERROR_CHARS,
    BotEvent,
    BotFhirClient,
    BotFhirError,
    LogBuffer,
    SandboxNamespace,
    json_default,
)
from fhirbots.bots.compile import BOT_FILENAME, HANDLER_NAME, compile_bot
from fhirbots.bots.errors import BotCompileError
from fhirbots.bots.policy import SandboxPolicy

__all__ = ["Worker", "main", "policy_from_message"]

_WARM_UP_SOURCE = """
import json
from datetime import date, datetime
from decimal import Decimal
def handler(fhir, event):
    stamp = datetime.strptime("2024-01-02 03:04", "%Y-%m-%d %H:%M")
    return json.dumps([str(date.today()), str(datetime.now()), stamp.isoformat(),
                       format(Decimal("1.5"), "n"), "bücher.example".encode("idna").decode()])
"""
"""Compiled and run once at start: every module that allowed modules import lazily from C
(``time`` for ``date.today()``, ``_strptime``, ``locale``, the idna codec) gets loaded
before limits apply, since bot code cannot import them itself (see ``_import_guard``)."""

_WARM_UP_MODULES = frozenset({"json", "datetime", "decimal"})
"""What :data:`_WARM_UP_SOURCE` imports: allowed to it even when the policy allows bots
fewer modules."""

_PRELOADED_MODULES = ("time", "_strptime", "locale", "calendar", "unicodedata", "encodings.idna")
"""Modules trusted C code may import on a bot's frame; loaded at start for the same reason."""


def policy_from_message(fields: dict[str, Any]) -> SandboxPolicy:
    """Rebuild the policy the engine sent in its ``init`` message."""
    fields = dict(fields)
    fields["allowed_modules"] = frozenset(fields.get("allowed_modules", ()))
    return SandboxPolicy(**fields)


def process_state() -> tuple[object, ...]:
    """Process-wide facts that no execution may change; a worker whose facts changed during an
    execution is replaced before it runs another (``register`` on any ABC moves the cache
    token). Modules trusted code imports on first use (a codec, a time-zone reader) are not
    among them: a fresh worker would import the very same ones."""
    return (
        abc.get_cache_token(),
        sys.getrecursionlimit(),
        sys.getswitchinterval(),
        decimal.DefaultContext.prec,
        decimal.DefaultContext.rounding,
    )


def _run_module(code: CodeType, env: dict[str, Any]) -> None:
    """Run a compiled bot module with ``env`` as its globals."""
    FunctionType(code, env)()


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set_soft_limit(which: int, soft: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _format_exception(exc: BaseException, lines: list[str]) -> str:
    """The bot's own frames and the exception, as an author would want to read them."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == BOT_FILENAME]
    parts = []
    if frames:
        parts.append("Traceback (bot code):")
        for frame in frames[-20:]:
            parts.append(f"  line {frame.lineno}, in {frame.name}")
            if frame.lineno and 0 < frame.lineno <= len(lines):
                parts.append("    " + lines[frame.lineno - 1].strip())
    try:
        message = str(exc)
    except Exception:  # a bot's own __str__ may fail
        message = "<unprintable>"
    # The bot knows BotFhirError by another name; its own subclasses keep theirs.
    name = FHIR_ERROR_NAME if type(exc) is BotFhirError else type(exc).__name__
    parts.append(f"{name}: {message}"[:MAX_ERROR_CHARS])
    return "\n".join(parts)


class Worker:
    """The worker's state: channel, policy, sandbox namespace and code cache."""

    def __init__(self, in_fd: int, out_fd: int, policy: SandboxPolicy) -> None:
        self._in = in_fd
        self._out = out_fd
        self.policy = policy
        self._namespace = SandboxNamespace(build_proxies(policy.allowed_modules))
        self._cache: OrderedDict[str, tuple[Any, list[str]]] = OrderedDict()
        self._fhir_calls = 0
        self._fhir_limit = policy.max_fhir_calls
        self._state: tuple[object, ...] = ()

    def send(self, message: dict[str, Any]) -> None:
        """Write one message to the engine."""
        write_frame(self._out, encode(message))

    def receive(self) -> dict[str, Any]:
        """Read one message from the engine."""
        return read_frame(self._in, self.policy.max_message_bytes)

    def apply_process_limits(self) -> None:
        """Limits that hold for the worker's whole life."""
        files = self.policy.max_open_files
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
        # SIGXCPU (the CPU limit) would otherwise dump a core file of the sandbox.
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.policy.forbid_processes:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
        memory = self.policy.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    def _fhir_transport(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        self._fhir_calls += 1
        if self._fhir_calls > self._fhir_limit:
            return {
                "ok": False,
                "status": 429,
                "message": f"more than SandboxPolicy.max_fhir_calls ({self._fhir_limit}) "
                "FHIR calls in one execution",
            }
        frame = encode({"op": "fhir", "method": method, "args": args}, default=json_default)
        if len(frame) > self.policy.max_message_bytes:
            return {
                "ok": False,
                "status": 413,
                "message": f"FHIR request of {len(frame)} bytes exceeds "
                f"SandboxPolicy.max_message_bytes ({self.policy.max_message_bytes})",
            }
        write_frame(self._out, frame)
        reply = self.receive()
        if reply.get("op") != "fhir_result":
            raise ChannelClosedError(f"unexpected message {reply.get('op')!r} during a FHIR call")
        return reply

    def _code_for(self, message: dict[str, Any]) -> tuple[Any, list[str]]:
        digest = str(message["digest"])
        cached = self._cache.get(digest)
        if cached is not None:
            self._cache.move_to_end(digest)
            return cached
        source = message.get("source")
        if source is None:
            self.send({"op": "need_source", "digest": digest})
            source = self.receive().get("source")
        compiled = compile_bot(str(source), self.policy)
        entry = (compiled.code, compiled.source.splitlines())
        self._cache[digest] = entry
        if len(self._cache) > self.policy.code_cache_size:
            self._cache.popitem(last=False)
        return entry

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        """Run one execution and return its ``done`` message."""
        try:
            code, lines = self._code_for(message)
        except BotCompileError as exc:
            return {"op": "done", "status": "error", "error": str(exc), "logs": ""}
        limits = message.get("limits") or {}
        buffer = LogBuffer(self.policy.max_log_bytes)
        event = BotEvent(message.get("event") or {})
        fhir = BotFhirClient(self._fhir_transport)
        self._fhir_calls = 0
        decimal.setcontext(decimal.Context())
        env = self._namespace.build_globals(BotFhirError, buffer)
        status, error, output, recycle = "success", None, None, False
        # RLIMIT_CPU counts the worker's whole life: re-arm it relative to what is used.
        cpu_budget = float(limits.get("cpu_seconds", self.policy.cpu_seconds))
        _set_soft_limit(resource.RLIMIT_CPU, math.ceil(_cpu_used() + cpu_budget))
        _set_soft_limit(resource.RLIMIT_AS, int(limits.get("memory_bytes", 1 << 62)))
        try:
            _run_module(code, env)
            value = env[HANDLER_NAME](fhir, event)
            try:
                output = orjson.dumps(value, default=json_default)
            except orjson.JSONEncodeError as exc:  # a TypeError: only the encoder's are this
                status, error, output = (
                    "error",
                    f"return value is not JSON-serialisable: {exc}",
                    None,
                )
            if output is not None and len(output) > self.policy.max_output_bytes:
                status, output = "error", None
                error = (
                    "return value is larger than SandboxPolicy.max_output_bytes "
                    f"({self.policy.max_output_bytes} bytes)"
                )
        except MemoryError:
            status, output, recycle = "memory", None, True
            error = "MemoryError: the bot exceeded its memory limit"
        except ChannelClosedError:
            raise
        except BaseException as exc:  # everything a bot raises is its own failure
            status, output = "error", None
            error = _format_exception(exc, lines)
        finally:
            env.clear()
            _set_soft_limit(resource.RLIMIT_AS, self.policy.memory_bytes)
        if process_state() != self._state:
            recycle = True  # the next bot must start from the state every bot starts from
        result: dict[str, Any] = {
            "op": "done",
            "status": status,
            "logs": buffer.text(),
            "error": error,
            "recycle": recycle,
        }
        if output is not None:
            result["output"] = orjson.Fragment(output)
        return result

    def warm_up(self) -> None:
        """Load lazily imported modules and run a bot that touches them."""
        for name in _PRELOADED_MODULES:
            importlib.import_module(name)
        # The warm-up is our code, not a bot's: under a policy that leaves out one of its
        # modules it would be refused and the worker would never start. It gets a policy and
        # a namespace of its own; bots keep the worker's.
        policy = self.policy.with_modules(*_WARM_UP_MODULES)
        code = compile_bot(_WARM_UP_SOURCE, policy).code
        namespace = SandboxNamespace(build_proxies(policy.allowed_modules))
        env = namespace.build_globals(BotFhirError, LogBuffer(1024))
        _run_module(code, env)
        env[HANDLER_NAME](None, BotEvent({}))

    def serve(self) -> None:
        """Answer ``exec`` messages until ``stop`` or the channel closes."""
        self._state = process_state()
        self.send({"op": "ready", "pid": os.getpid()})
        while True:
            message = self.receive()
            op = message.get("op")
            if op == "stop":
                return
            if op == "exec":
                self.send(self.execute(message))


def main() -> None:
    """Entry point of a worker process."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    # Nothing may write into the channel by accident: stdio now points at /dev/null.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    os.close(devnull)
    try:
        init = read_frame(in_fd, 1 << 20)
        worker = Worker(in_fd, out_fd, policy_from_message(init["policy"]))
        worker.warm_up()
        worker.apply_process_limits()
        worker.serve()
    except (ChannelClosedError, KeyboardInterrupt):
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
