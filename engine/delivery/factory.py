"""Builds the delivery store and the dispatcher from the settings (once, at the entry point)."""

from __future__ import annotations

from engine.delivery.bot import BotInvoker
from engine.delivery.dispatcher import Dispatcher
from engine.delivery.policy import DeliveryDefaults
from engine.delivery.store import DeliveryStore
from engine.delivery.store_sqlite import DELIVERY_DB, SqliteDeliveryStore
from engine.delivery.websocket import WebSocketHub
from engine.eventlog.port import EventLog
from engine.service import FhirService
from engine.settings import Settings
from engine.storage.port import Storage

__all__ = ["base_url_of", "create_delivery_store", "defaults_from", "open_dispatcher"]


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
        from engine.delivery.store_postgres import PostgresDeliveryStore

        return PostgresDeliveryStore(settings.database_url)
    return SqliteDeliveryStore(settings.data_dir / DELIVERY_DB)


def base_url_of(settings: Settings) -> str:
    """Base of ``fullUrl`` in notification Bundles."""
    return settings.public_url or f"http://{settings.host}:{settings.port}/fhir/R4"


async def open_dispatcher(
    settings: Settings,
    *,
    storage: Storage,
    fhir: FhirService,
    event_log: EventLog,
    bots: BotInvoker | None = None,
    hub: WebSocketHub | None = None,
) -> Dispatcher:
    """A dispatcher with an open store (not yet started: call ``start()`` to deliver)."""
    store = create_delivery_store(settings)
    await store.open()
    return Dispatcher(
        event_log=event_log,
        store=store,
        storage=storage,
        fhir=fhir,
        defaults=defaults_from(settings),
        base_url=base_url_of(settings),
        bots=bots,
        hub=hub if hub is not None else WebSocketHub(),
    )
