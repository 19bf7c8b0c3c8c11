"""Endpoint safety: non-public addresses are refused unless allowed."""

from __future__ import annotations

import ipaddress

import pytest

from fhirbots.engine.delivery.errors import EndpointRefused
from fhirbots.engine.delivery.safety import EndpointGuard


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost/hook",
    ],
)
async def test_non_public_refused_by_default(url: str) -> None:
    with pytest.raises(EndpointRefused, match="FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS"):
        await EndpointGuard().check_url(url)


@pytest.mark.parametrize("url", ["ftp://example.org/x", "file:///etc/passwd", "http:///x"])
async def test_bad_urls_refused(url: str) -> None:
    with pytest.raises(EndpointRefused):
        await EndpointGuard().check_url(url)


async def test_allowed_network_lets_only_it_through() -> None:
    guard = EndpointGuard.from_cidrs(["127.0.0.1/32"])
    await guard.check_url("http://127.0.0.1:9/hook")
    with pytest.raises(EndpointRefused):
        await guard.check_url("http://127.0.0.2/hook")
    with pytest.raises(EndpointRefused):
        await guard.check_url("http://10.0.0.1/hook")


def test_public_address_passes() -> None:
    EndpointGuard().check_address("example.org", ipaddress.ip_address("93.184.216.34"))


def test_bad_cidr_rejected() -> None:
    with pytest.raises(ValueError):
        EndpointGuard.from_cidrs(["not-a-network"])
