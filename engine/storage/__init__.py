"""Datastore: one port (:class:`fhirbots.engine.storage.port.Storage`), two adapters (SQLite,
PostgreSQL)."""
