"""Settings come from the environment once, at the entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

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
