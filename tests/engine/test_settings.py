"""Settings come from the environment once, at the entry point."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from fhirbots.bots.errors import PolicyError
from fhirbots.bots.policy import MIB, SandboxPolicy
from fhirbots.engine.settings import Settings


def test_environment_overrides_defaults() -> None:
    settings = Settings.from_env(
        {
            "FHIRBOTS_DATA_DIR": "/srv/fhirbots",
            "FHIRBOTS_PORT": "9090",
            "FHIRBOTS_KAFKA": "127.0.0.1:9092",
            "FHIRBOTS_LOOP_GUARD_DEPTH": "2",
            "FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS": "127.0.0.1/32, 10.0.0.0/8",
        }
    )
    assert settings.data_dir == Path("/srv/fhirbots")
    assert settings.port == 9090
    assert settings.kafka == "127.0.0.1:9092"
    assert settings.database_url is None
    assert settings.loop_guard_depth == 2
    assert settings.allowed_endpoint_networks == ("127.0.0.1/32", "10.0.0.0/8")
    assert settings.sqlite_path == Path("/srv/fhirbots/fhirbots.db")


def test_unset_flags_leave_settings_alone() -> None:
    base = Settings.from_env({})
    assert base.loop_guard_depth == 5
    changed = base.with_overrides(port=1234, host=None)
    assert changed.port == 1234
    assert changed.host == base.host


def test_sqlite_writer_mode() -> None:
    assert Settings.from_env({}).sqlite_writer_process is True
    assert Settings.from_env({"FHIRBOTS_SQLITE_WRITER": "thread"}).sqlite_writer_process is False
    with pytest.raises(ValueError, match="FHIRBOTS_SQLITE_WRITER"):
        Settings.from_env({"FHIRBOTS_SQLITE_WRITER": "fork"})


def test_base_url_is_the_public_url_or_the_api_path_on_an_origin() -> None:
    assert Settings(port=9000).base_url() == "http://127.0.0.1:9000/fhir/R4"
    assert Settings().base_url("https://api.example.org") == "https://api.example.org/fhir/R4"
    public = Settings(public_url="https://x/fhir/R4/")
    assert public.base_url() == public.base_url("http://other") == "https://x/fhir/R4"


BOT_LIMITS = {
    "FHIRBOTS_BOT_ALLOWED_MODULES": "json, textwrap",
    "FHIRBOTS_BOT_TIMEOUT": "2.5",
    "FHIRBOTS_BOT_CPU_SECONDS": "3",
    "FHIRBOTS_BOT_MEMORY_MB": "256",
    "FHIRBOTS_BOT_MAX_OPEN_FILES": "12",
    "FHIRBOTS_BOT_FORBID_PROCESSES": "False",
    "FHIRBOTS_BOT_MAX_OUTPUT_BYTES": "2048",
    "FHIRBOTS_BOT_MAX_LOG_BYTES": "1024",
    "FHIRBOTS_BOT_MAX_SOURCE_BYTES": "4096",
    "FHIRBOTS_BOT_MAX_FHIR_CALLS": "0",
    "FHIRBOTS_BOT_MAX_MESSAGE_BYTES": "65536",
    "FHIRBOTS_BOT_WORKERS": "4",
    "FHIRBOTS_BOT_MAX_EXECUTIONS_PER_WORKER": "100",
    "FHIRBOTS_BOT_CODE_CACHE_SIZE": "8",
    "FHIRBOTS_BOT_SPARE_WORKERS": "2",
    "FHIRBOTS_BOT_PROJECT_CONCURRENCY": "3",
    "FHIRBOTS_BOT_PROJECT_QUEUE": "5",
}
"""A value other than the default for every bot limit."""


def test_bot_limits_default_to_the_sandbox_policy() -> None:
    assert Settings().sandbox_policy() == SandboxPolicy()
    blank = Settings.from_env(dict.fromkeys(BOT_LIMITS, " "))
    assert blank.sandbox_policy() == SandboxPolicy()


def test_bot_limits_come_from_the_environment() -> None:
    settings = Settings.from_env(BOT_LIMITS)
    assert settings.bot_allowed_modules == ("json", "textwrap")
    assert settings.bot_timeout == 2.5
    assert settings.bot_memory_mb == 256
    assert settings.bot_forbid_processes is False
    assert settings.bot_workers == 4
    assert settings.sandbox_policy() == SandboxPolicy(
        allowed_modules=frozenset({"json", "textwrap"}),
        timeout_seconds=2.5,
        cpu_seconds=3,
        memory_bytes=256 * MIB,
        max_open_files=12,
        forbid_processes=False,
        max_output_bytes=2048,
        max_log_bytes=1024,
        max_source_bytes=4096,
        max_fhir_calls=0,
        max_message_bytes=65536,
        pool_size=4,
        max_executions_per_worker=100,
        code_cache_size=8,
        spare_workers=2,
        project_concurrency=3,
        project_queue=5,
    )


def test_every_field_of_the_sandbox_policy_is_a_setting() -> None:
    configured = Settings.from_env(BOT_LIMITS).sandbox_policy()
    unchanged = [f.name for f in fields(SandboxPolicy) if getattr(configured, f.name) == f.default]
    assert unchanged == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FHIRBOTS_BOT_TIMEOUT", "soon"),
        ("FHIRBOTS_BOT_TIMEOUT", "inf"),
        ("FHIRBOTS_BOT_MEMORY_MB", "0.5"),
        ("FHIRBOTS_BOT_WORKERS", "two"),
        ("FHIRBOTS_BOT_FORBID_PROCESSES", "maybe"),
    ],
)
def test_an_unreadable_bot_limit_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be .*, not {value!r}$"):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("environ", "refusal"),
    [
        (
            {"FHIRBOTS_BOT_TIMEOUT": "0"},
            r"SandboxPolicy\.timeout_seconds must be positive, got 0\.0 "
            r"\(set by FHIRBOTS_BOT_TIMEOUT\)",
        ),
        (
            {"FHIRBOTS_BOT_MEMORY_MB": "32"},
            r"SandboxPolicy\.memory_bytes must be at least 64 MiB "
            r"\(set by FHIRBOTS_BOT_MEMORY_MB\)",
        ),
        (
            {"FHIRBOTS_BOT_ALLOWED_MODULES": "json,os.path"},
            r"SandboxPolicy\.allowed_modules .*'os\.path'.* "
            r"\(set by FHIRBOTS_BOT_ALLOWED_MODULES\)",
        ),
        (
            {"FHIRBOTS_BOT_MAX_FHIR_CALLS": "-1"},
            r"SandboxPolicy\.max_fhir_calls must be >= 0 \(set by FHIRBOTS_BOT_MAX_FHIR_CALLS\)",
        ),
        (
            {"FHIRBOTS_BOT_MAX_OUTPUT_BYTES": str(32 * MIB)},
            r"SandboxPolicy\.max_message_bytes must exceed .* \(set by "
            r"FHIRBOTS_BOT_MAX_OUTPUT_BYTES, FHIRBOTS_BOT_MAX_LOG_BYTES, "
            r"FHIRBOTS_BOT_MAX_MESSAGE_BYTES\)",
        ),
    ],
)
def test_a_refused_bot_limit_names_the_policy_field_and_its_variable(
    environ: dict[str, str], refusal: str
) -> None:
    settings = Settings.from_env(environ)
    with pytest.raises(PolicyError, match=f"^{refusal}$"):
        settings.sandbox_policy()


def test_production_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "FHIRBOTS_MANAGEMENT_PORT": "9100",
            "FHIRBOTS_SHUTDOWN_GRACE_SECONDS": "12.5",
            "FHIRBOTS_KAFKA_SSL_CAFILE": "/etc/kafka/ca.pem",
            "FHIRBOTS_OTLP_ENDPOINT": "http://collector:4318",
        }
    )
    assert settings.management_port == 9100
    assert settings.shutdown_grace_seconds == 12.5
    assert str(settings.kafka_ssl_cafile) == "/etc/kafka/ca.pem"
    assert settings.otlp_endpoint == "http://collector:4318"
    assert Settings().management_port is None
    assert Settings().shutdown_grace_seconds == 30.0


def test_servers_migrate_on_start_only_in_embedded_mode_unless_told() -> None:
    assert Settings().migrates_on_start is True
    distributed = Settings(database_url="postgresql://db/fhirbots")
    assert distributed.migrates_on_start is False
    told = Settings.from_env(
        {"FHIRBOTS_DATABASE_URL": "postgresql://db/fhirbots", "FHIRBOTS_AUTO_MIGRATE": "true"}
    )
    assert told.migrates_on_start is True
    assert Settings.from_env({"FHIRBOTS_AUTO_MIGRATE": "false"}).migrates_on_start is False


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FHIRBOTS_MANAGEMENT_PORT", "ninety"),
        ("FHIRBOTS_SHUTDOWN_GRACE_SECONDS", "0"),
        ("FHIRBOTS_AUTO_MIGRATE", "yes"),
    ],
)
def test_production_settings_that_do_not_parse_are_named(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable):
        Settings.from_env({variable: value})
