"""Builds the delivery store and its defaults from the settings (once, at the entry point)."""

from __future__ import annotations

from fhirbots.engine.delivery.policy import DeliveryDefaults
from fhirbots.engine.delivery.store import DeliveryStore
from fhirbots.engine.delivery.store_sqlite import DELIVERY_DB, SqliteDeliveryStore
from fhirbots.engine.settings import Settings

__all__ = ["create_delivery_store", "defaults_from"]


def defaults_from(settings: Settings) -> DeliveryDefaults:
    """Delivery defaults from the engine settings."""
    return DeliveryDefaults(
        timeout=settings.delivery_timeout,
        max_attempts=settings.delivery_max_attempts,
        auto_disable_after=settings.delivery_auto_disable_after,
        allowed_networks=settings.allowed_endpoint_networks,
    )


def create_delivery_store(settings: Settings) -> DeliveryStore:
    """PostgreSQL (the datastore's database) when configured, else ``delivery.db``."""
    if settings.database_url:
        # Imported only when configured: the embedded engine never loads asyncpg.
        from fhirbots.engine.delivery.store_postgres import PostgresDeliveryStore

        return PostgresDeliveryStore(settings.database_url, migrate=settings.migrates_on_start)
    return SqliteDeliveryStore(settings.data_dir / DELIVERY_DB, migrate=settings.migrates_on_start)
