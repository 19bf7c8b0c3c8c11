"""TLS of the API: the settings are checked before anything starts, and a real ``fhirbots serve``
with a certificate from a throwaway CA answers a real HTTPS client that trusts the CA, and only
over TLS."""

from __future__ import annotations

import asyncio
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest

from fhirbots.engine.cli.tls import api_tls_context
from fhirbots.engine.settings import Settings
from tests.certificates import make_certificates
from tests.conftest import child_env
from tests.engine.scenarios.process import free_port
from tests.waiting import eventually


def test_no_files_no_tls() -> None:
    assert api_tls_context(Settings()) is None


def test_both_files_or_none(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be set together"):
        api_tls_context(Settings(tls_certfile=tmp_path / "cert.pem"))


def test_files_that_do_not_load_are_named(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    settings = Settings(tls_certfile=tmp_path / "cert.pem", tls_keyfile=tmp_path / "key.pem")
    with pytest.raises(ValueError, match="FHIRBOTS_TLS_CERTFILE / FHIRBOTS_TLS_KEYFILE"):
        api_tls_context(settings)


@pytest.mark.integration
async def test_serve_over_https(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "tls")
    port = free_port()
    env = {k: v for k, v in child_env().items() if not k.startswith("FHIRBOTS_")}
    env.update(
        FHIRBOTS_TLS_CERTFILE=str(certificates.cert),
        FHIRBOTS_TLS_KEYFILE=str(certificates.key),
        FHIRBOTS_LOG_LEVEL="WARNING",
    )
    serve = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fhirbots.engine.cli.main",
        "serve",
        "--data-dir",
        str(tmp_path / "data"),
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    trusting = ssl.create_default_context(cafile=str(certificates.ca))
    base = f"https://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def answers() -> bool:
                assert serve.returncode is None, "serve exited"
                try:
                    async with http.get(f"{base}/readyz", ssl=trusting) as response:
                        return response.status == 200
                except aiohttp.ClientConnectionError:
                    return False

            await eventually(answers, "serve to answer over HTTPS")
            async with http.get(f"{base}/fhir/R4/metadata", ssl=trusting) as metadata:
                assert metadata.status == 200
                assert (await metadata.json())["resourceType"] == "CapabilityStatement"
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(f"{base}/livez")  # the system's CAs do not know this one
            with pytest.raises(aiohttp.ClientError):
                await http.get(f"http://127.0.0.1:{port}/livez")  # plain HTTP is not served
    finally:
        serve.terminate()
        out, _ = await asyncio.wait_for(serve.communicate(), 60)
    assert serve.returncode == 0
    assert f"fhirbots serving https://127.0.0.1:{port}/fhir/R4".encode() in out
