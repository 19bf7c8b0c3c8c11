"""Settings -> delivery defaults and store."""

from __future__ import annotations

from pathlib import Path

from fhirbots.engine.delivery.factory import create_delivery_store, defaults_from
from fhirbots.engine.delivery.store_postgres import PostgresDeliveryStore
from fhirbots.engine.delivery.store_sqlite import SqliteDeliveryStore
from fhirbots.engine.settings import Settings


def test_settings_from_env_reach_the_defaults() -> None:
    settings = Settings.from_env(
        {
            "FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS": "127.0.0.1/32, 10.0.0.0/8",
            "FHIRBOTS_DELIVERY_TIMEOUT": "2.5",
            "FHIRBOTS_DELIVERY_MAX_ATTEMPTS": "7",
            "FHIRBOTS_DELIVERY_AUTO_DISABLE_AFTER": "0",
        }
    )
    defaults = defaults_from(settings)
    assert defaults.allowed_networks == ("127.0.0.1/32", "10.0.0.0/8")
    assert defaults.timeout == 2.5 and defaults.max_attempts == 7
    assert defaults.auto_disable_after == 0


def test_store_follows_the_datastore(tmp_path: Path) -> None:
    embedded = create_delivery_store(Settings(data_dir=tmp_path))
    assert isinstance(embedded, SqliteDeliveryStore)
    assert embedded.path == tmp_path / "delivery.db"
    distributed = create_delivery_store(Settings(database_url="postgresql://u@127.0.0.1/db"))
    assert isinstance(distributed, PostgresDeliveryStore)
