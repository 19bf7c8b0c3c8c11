"""Datastore: one port (:class:`engine.storage.port.Storage`), two adapters (SQLite, PostgreSQL)."""
