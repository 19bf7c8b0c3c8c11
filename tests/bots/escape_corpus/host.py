"""The host and other tenants: files, network, databases, environment variables, the
gateway's channel and credentials, other projects' code and data."""

from __future__ import annotations

from tests.bots.escape_corpus import Attempt, handler

ATTEMPTS = [
    Attempt(
        "builtins-open-attribute", handler("return __builtins__.open"), "compile", "__builtins__"
    ),
    Attempt("import-urllib", handler("return 1", "import urllib.request"), "compile", "urllib"),
    Attempt("import-http", handler("return 1", "import http.client"), "compile", "http"),
    Attempt("import-asyncpg", handler("return 1", "import asyncpg"), "compile", "asyncpg"),
    Attempt("import-os-path", handler("return 1", "from os import path"), "compile", "'os'"),
    Attempt("import-shutil", handler("return 1", "import shutil"), "compile", "shutil"),
    Attempt("import-platform", handler("return 1", "import platform"), "compile", "platform"),
    Attempt("stdin-input", handler("return input()"), "compile", "input"),
    Attempt(
        "zoneinfo-path-traversal",
        handler("return str(zoneinfo.ZoneInfo('../../../proc/self/environ'))", "import zoneinfo"),
        "error",
        "ValueError",
    ),
    Attempt(
        "zoneinfo-absolute-path",
        handler("return str(zoneinfo.ZoneInfo.no_cache('/etc/passwd'))", "import zoneinfo"),
        "error",
        "ValueError",
    ),
    Attempt(
        "fhir-transport-getattr",
        handler("return getattr(fhir, '_transport')"),
        "error",
        "'_'",
    ),
    Attempt(
        "fhir-method-closure",
        handler("return fhir.read.__closure__"),
        "compile",
        "__closure__",
    ),
    Attempt(
        "fhir-method-unlisted",
        handler("return fhir.call"),
        "error",
        "allow-list",
    ),
    Attempt(
        "logger-buffer",
        handler("return logger._buffer"),
        "compile",
        "_buffer",
    ),
    Attempt(
        "logger-buffer-getattr",
        handler("return getattr(logger, 'buffer')"),
        "error",
        "allow-list",
    ),
    Attempt(
        "event-unknown-field",
        handler("return event.token"),
        "error",
        "allow-list",
    ),
    Attempt(
        "api-key-resource",
        handler("return fhir.read('ApiKey', 'admin')"),
        "error",
        "FhirError",
    ),
    Attempt(
        "other-project-bot",
        handler("return fhir.read('Bot', 'of-another-project')"),
        "error",
        "FhirError",
    ),
    Attempt(
        "secrets-not-granted",
        handler("return event.secrets"),
        "success",
        "{}",
    ),
    Attempt(
        "printed-starts-empty",
        handler("return [printed]"),
        "success",
        "['']",
    ),
    Attempt(
        "json-load-file-like",
        handler("return json.loads(event.input or '{}')", "import json"),
        "success",
        "{}",
    ),
]
