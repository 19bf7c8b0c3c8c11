"""PostgreSQL over TLS, set by the DSN alone (``sslmode``, ``sslrootcert``), which asyncpg
honours: the datastore's and the side stores' connections are encrypted with
``sslmode=require``, and ``verify-full`` refuses a server whose certificate the given CA did
not sign."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirbots.engine.automation.store_postgres import PostgresBotStore
from fhirbots.engine.errors import DatastoreUnavailable
from fhirbots.engine.storage.postgres import PostgresStorage
from tests.certificates import make_certificates
from tests.conftest import postgres_dsn

pytestmark = pytest.mark.integration

ENCRYPTED = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def _with(dsn: str, query: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


async def test_sslmode_in_the_dsn_encrypts_every_pool() -> None:
    dsn = _with(postgres_dsn(), "sslmode=require")
    storage = PostgresStorage(dsn)
    await storage.open()
    try:
        assert await storage.pool.fetchval(ENCRYPTED) is True
        assert await storage.search_pool.fetchval(ENCRYPTED) is True
    finally:
        await storage.close()
    bots = PostgresBotStore(dsn)
    await bots.open()
    try:
        assert (await bots._db.fetch(ENCRYPTED))[0][0] is True
    finally:
        await bots.close()


async def test_verify_full_refuses_a_certificate_of_another_ca(tmp_path: Path) -> None:
    other = make_certificates(tmp_path / "tls")
    dsn = _with(postgres_dsn(), f"sslmode=verify-full&sslrootcert={other.ca}")
    storage = PostgresStorage(dsn)
    with pytest.raises(DatastoreUnavailable):
        await storage.open()
    await storage.close()
