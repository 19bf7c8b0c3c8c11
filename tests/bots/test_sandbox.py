"""Guard functions and bot-facing objects, exercised in-process (no worker, no limits)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from fhirbots.bots._modules import build_proxies
from fhirbots.bots._sandbox import (
    BotEvent,
    BotFhirClient,
    BotFhirError,
    LogBuffer,
    SandboxNamespace,
    SandboxViolation,
    guarded_getattr,
    guarded_write,
    json_default,
)
from fhirbots.bots.compile import compile_bot


def run_in_namespace(source: str, fhir: Any = None, event: Any = None) -> tuple[Any, str]:
    """Compile and run a bot in this process with the sandbox globals."""
    buffer = LogBuffer(10_000)
    env = SandboxNamespace(build_proxies(frozenset({"json", "math"}))).build_globals(
        BotFhirError, buffer
    )
    compiled = compile_bot(source)
    exec(compiled.code, env)
    return env["handler"](fhir, event or BotEvent({})), buffer.text()


@pytest.mark.parametrize(
    ("obj", "name", "fragment"),
    [
        ((), "__class__", "starts with '_'"),
        ((x for x in ""), "gi_frame", "gi_frame"),
        (int, "mro", "mro"),
        ("{0}", "format", "str.format"),
        (str, "format_map", "str.format_map"),
    ],
)
def test_getattr_refusals(obj: Any, name: str, fragment: str) -> None:
    with pytest.raises(SandboxViolation, match=fragment):
        guarded_getattr(obj, name)


def test_getattr_refuses_values_that_lead_out() -> None:
    class Holder:  # as if bot code had defined it
        __module__ = "bot"
        module = pytest
        opener = open

    with pytest.raises(SandboxViolation, match="leads out"):
        guarded_getattr(Holder(), "module")
    with pytest.raises(SandboxViolation, match="leads out"):
        guarded_getattr(Holder(), "opener")


def test_getattr_default_and_plain_attributes() -> None:
    assert guarded_getattr(Decimal("1.5"), "is_signed")() is False
    assert guarded_getattr(object(), "missing", 7) == 7
    assert guarded_getattr(1, "not_listed", 7) == 7
    with pytest.raises(AttributeError):
        guarded_getattr(object(), "missing")
    with pytest.raises(TypeError):
        guarded_getattr(object(), 1)  # type: ignore[arg-type]


def test_write_guard_allows_containers_and_bot_classes_only() -> None:
    data: dict[str, int] = {}
    guarded_write(data)["a"] = 1
    assert data == {"a": 1}
    with pytest.raises(SandboxViolation, match="cannot modify a Decimal"):
        guarded_write(Decimal(1)).x = 1
    output, _ = run_in_namespace(
        "class Counter:\n"
        "    def __init__(self):\n"
        "        self.n = 0\n"
        "def handler(fhir, event):\n"
        "    c = Counter()\n"
        "    c.n = c.n + 2\n"
        "    return c.n\n"
    )
    assert output == 2


def test_print_and_logger_are_captured() -> None:
    output, logs = run_in_namespace(
        "def handler(fhir, event):\n"
        "    print('a', 1, sep='-')\n"
        "    logger.error('n=%d', 3)\n"
        "    return printed\n"
    )
    assert logs == "a-1\nERROR n=3\n"
    assert output == "a-1\nERROR n=3\n"


def test_log_buffer_truncates_with_marker() -> None:
    buffer = LogBuffer(10)
    buffer.write("12345")
    buffer.write("67890abc")
    buffer.write("more")
    assert buffer.text().startswith("1234567890\n[log truncated at 10 characters]")
    assert buffer.truncated


def test_imports_go_through_proxies() -> None:
    output, _ = run_in_namespace(
        "import json\nimport math as m\n"
        "def handler(fhir, event):\n"
        "    return [json.dumps([1]), m.floor(2.5), repr(json)]\n"
    )
    assert output == ["[1]", 2, "<sandboxed module 'json'>"]


def test_event_is_read_only() -> None:
    # Its fields are filled from __slots__ at run time, which a type checker cannot see.
    event: Any = BotEvent({"input": {"a": 1}, "secrets": {}})
    assert event.input == {"a": 1}
    assert event.trace_id is None
    with pytest.raises(SandboxViolation):
        event.input = 2


def test_fhir_client_turns_failed_replies_into_fhir_error() -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    def transport(method: str, args: dict[str, Any]) -> dict[str, Any]:
        sent.append((method, args))
        if method == "read":
            return {"ok": False, "status": 404, "message": "gone", "outcome": {"x": 1}}
        return {"ok": True, "value": {"entry": [{"resource": {"id": "a"}}]}}

    client = BotFhirClient(transport)
    with pytest.raises(BotFhirError) as failed:
        client.read("Patient", "1")
    assert (failed.value.status, failed.value.outcome, str(failed.value)) == (404, {"x": 1}, "gone")
    assert client.search_one("Patient", {"name": "x"}) == {"id": "a"}
    client.patch("Patient", "1", iter([{"op": "remove", "path": "/x"}]))
    assert sent[-1] == (
        "patch",
        {"resource_type": "Patient", "resource_id": "1", "patch": [{"op": "remove", "path": "/x"}]},
    )


def test_json_default() -> None:
    assert json_default(Decimal("1.10")) == "1.10"
    assert json_default({3, 1}) == [1, 3]
    with pytest.raises(TypeError):
        json_default(object())


def test_bot_api_module_gives_logger_and_fhir_error() -> None:
    output, logs = run_in_namespace(
        "from fhirbots import FhirError, logger\n"
        "def handler(fhir, event):\n"
        "    logger.info('hi')\n"
        "    return FhirError('x', 400, {}).status\n"
    )
    assert (output, logs) == (400, "INFO hi\n")


def test_imports_made_by_trusted_c_code_get_an_empty_proxy() -> None:
    env = SandboxNamespace(build_proxies(frozenset({"datetime"}))).build_globals(
        BotFhirError, LogBuffer(100)
    )
    importer = env["__builtins__"]["__import__"]
    placeholder = importer("time", env, env, None, 0)
    assert dir(placeholder) == []
    with pytest.raises(AttributeError):
        guarded_getattr(placeholder, "sleep")
    with pytest.raises(ImportError, match="not allowed"):
        importer("surely_not_a_loaded_module", env, env, None, 0)
    output, _ = run_in_namespace(
        "import json\ndef handler(fhir, event):\n    return json.dumps(1)\n"
    )
    assert output == "1"
