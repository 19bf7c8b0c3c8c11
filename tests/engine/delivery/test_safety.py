"""Endpoint safety: only globally routable addresses, checked again at connect time."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from fhirbots.engine.delivery.errors import EndpointRefused
from fhirbots.engine.delivery.policy import DeliveryPolicy
from fhirbots.engine.delivery.resthook import RestHookChannel
from fhirbots.engine.delivery.safety import EndpointGuard, IpAddress, refusal

REFUSED_ADDRESSES = [
    # IPv4 special-purpose blocks
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.0.5",
    "169.254.169.254",  # cloud metadata (link-local)
    "100.64.0.1",  # shared address space
    "100.100.100.200",  # a cloud metadata address inside 100.64.0.0/10
    "100.127.255.255",
    "0.0.0.0",
    "0.1.2.3",
    "192.0.0.1",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    # IPv6
    "::",
    "::1",
    "fe80::1",  # link-local
    "fe80::1%1",
    "fc00::1",  # unique-local
    "fd12:3456:789a::1",
    "fec0::1",  # site-local
    "fefe::1",
    "ff02::1",  # multicast
    "ff05::2",
    "2001:db8::1",  # documentation
    "100::1",  # discard-only
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "::10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",  # local-use NAT64
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2002:6440:1::1",  # 6to4 of 100.64.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo wrapping 10.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]

GLOBAL_ADDRESSES = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below 100.64.0.0/10
    "100.128.0.1",  # just above
    "172.32.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]


def _ip(text: str) -> IpAddress:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_non_global_addresses_are_refused(address: str) -> None:
    assert refusal(_ip(address)) is not None
    with pytest.raises(EndpointRefused, match="FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS"):
        EndpointGuard().check_address("h", _ip(address))


@pytest.mark.parametrize("address", GLOBAL_ADDRESSES)
def test_global_addresses_pass(address: str) -> None:
    assert refusal(_ip(address)) is None
    EndpointGuard().check_address("h", _ip(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.5/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.100.100.200/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:7f00:1]/hook",
        "http://[2002:7f00:1::1]/hook",
        "http://[fec0::1]/hook",
        "http://[64:ff9b::a9fe:a9fe]/hook",
        "http://0.0.0.0/hook",
        "http://localhost/hook",
        "http://LOCALHOST./hook",
        # numeric forms that inet_aton reads as 127.0.0.1 or 169.254.169.254
        "http://2130706433/hook",
        "http://0x7f000001/hook",
        "http://0x7f.1/hook",
        "http://0x7F.0.0.1/hook",
        "http://0177.0.0.1/hook",
        "http://017700000001/hook",
        "http://127.1/hook",
        "http://2852039166/latest",
        "http://0xa9.0xfe.0xa9.0xfe/latest",
        "http://1.2.3/hook",
        "http://user:pass@127.0.0.1/hook",
        "https://127.0.0.1:443@example.org.127.0.0.1/hook",
    ],
)
async def test_internal_urls_refused_by_default(url: str) -> None:
    with pytest.raises(EndpointRefused):
        await EndpointGuard().check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/x",
        "file:///etc/passwd",
        "gopher://example.org:70/x",
        "ws://example.org/x",
        "javascript:alert(1)",
        "data:text/plain,x",
        "dict://example.org:11211/",
        "http:///x",
        "http://example.org:notaport/x",
    ],
)
async def test_bad_urls_refused(url: str) -> None:
    with pytest.raises(EndpointRefused):
        await EndpointGuard().check_url(url)


async def test_allowed_network_lets_only_it_through() -> None:
    guard = EndpointGuard.from_cidrs(["127.0.0.1/32"])
    await guard.check_url("http://127.0.0.1:9/hook")
    await guard.check_url("http://[::ffff:127.0.0.1]:9/hook")
    for url in ("http://127.0.0.2/hook", "http://10.0.0.1/hook", "http://[::1]/hook"):
        with pytest.raises(EndpointRefused):
            await guard.check_url(url)


async def test_every_resolved_address_is_checked() -> None:
    async def lookup(host: str, port: int) -> list[IpAddress]:
        return [_ip("93.184.216.34"), _ip("10.0.0.7")]

    guard = EndpointGuard(lookup=lookup)
    with pytest.raises(EndpointRefused, match=r"10\.0\.0\.7"):
        await guard.check_url("https://mixed.example/hook")


def test_bad_cidr_rejected() -> None:
    with pytest.raises(ValueError):
        EndpointGuard.from_cidrs(["not-a-network"])


class Rebinding:
    """A DNS that answers a public address first and the loopback address afterwards."""

    def __init__(self) -> None:
        self.answers = 0

    async def __call__(self, host: str, port: int) -> list[IpAddress]:
        self.answers += 1
        return [_ip("93.184.216.34" if self.answers == 1 else "127.0.0.1")]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[TestServer, list[bytes]]]:
    received: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, received
    await server.close()


async def test_rebinding_between_check_and_connect_is_refused(
    receiver: tuple[TestServer, list[bytes]],
) -> None:
    server, received = receiver
    dns = Rebinding()
    channel = RestHookChannel(EndpointGuard(lookup=dns))
    try:
        result = await channel.send(
            f"http://rebind.example:{server.port}/hook",
            b"{}",
            content_type="application/fhir+json",
            policy=DeliveryPolicy(),
            headers={},
        )
    finally:
        await channel.close()
    assert dns.answers == 2  # the check saw the public answer, the connector the loopback one
    assert not result.success and not result.retryable
    assert result.error is not None and "127.0.0.1" in result.error
    assert received == []


async def test_allowed_name_is_delivered_through_the_guarded_resolver(
    receiver: tuple[TestServer, list[bytes]],
) -> None:
    server, received = receiver

    async def lookup(host: str, port: int) -> list[IpAddress]:
        return [_ip("127.0.0.1")]

    channel = RestHookChannel(EndpointGuard.from_cidrs(["127.0.0.1/32"], lookup=lookup))
    try:
        result = await channel.send(
            f"http://receiver.example:{server.port}/hook",
            b"{}",
            content_type="application/fhir+json",
            policy=DeliveryPolicy(),
            headers={},
        )
    finally:
        await channel.close()
    assert result.success, result.error
    assert received == [b"{}"]
