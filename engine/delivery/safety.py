"""Endpoint safety: rest-hook and websocket targets must be public unless allowed.

An endpoint whose host resolves to a loopback, private, link-local, multicast, reserved or
unspecified address is refused (server-side request forgery into the engine's own network),
unless every such address lies in one of the allowed networks
(``FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS``). Checked at each attempt, after resolution, so a
DNS name that later points inside is caught too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fhirbots.engine.delivery.errors import EndpointRefused

__all__ = ["EndpointGuard"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOWED_SCHEMES = frozenset({"http", "https"})
"""rest-hook endpoints are HTTP(S) URLs."""


def _non_public(address: IpAddress) -> bool:
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True)
class EndpointGuard:
    """Refuses endpoints resolving to non-public addresses outside ``allowed``.

    Attributes:
        allowed: Networks non-public addresses may belong to.
    """

    allowed: tuple[IpNetwork, ...] = ()

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> EndpointGuard:
        """A guard allowing the given CIDR blocks (e.g. ``127.0.0.1/32``).

        Raises:
            ValueError: A block is not a valid network.
        """
        return cls(tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs))

    def check_address(self, host: str, address: IpAddress) -> None:
        """Refuse ``address`` (of ``host``) if it is non-public and not allowed."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not _non_public(address):
            return
        if any(address in net for net in self.allowed if net.version == address.version):
            return
        raise EndpointRefused(
            f"endpoint host {host!r} resolves to {address}, a non-public address; allow it "
            f"with FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS (e.g. {address}/32)"
        )

    async def check_url(self, url: str) -> None:
        """Refuse ``url`` unless it is http(s) and every address of its host may be called.

        Raises:
            EndpointRefused: Bad scheme, no host, unresolvable, or a refused address.
        """
        parts = urlsplit(url)
        if parts.scheme not in ALLOWED_SCHEMES:
            raise EndpointRefused(f"endpoint {url!r}: scheme must be http or https")
        host = parts.hostname
        if not host:
            raise EndpointRefused(f"endpoint {url!r} has no host")
        for address in await self._resolve(host, parts.port):
            self.check_address(host, address)

    @staticmethod
    async def _resolve(host: str, port: int | None) -> list[IpAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise EndpointRefused(f"endpoint host {host!r} does not resolve: {exc}") from exc
        return [ipaddress.ip_address(info[4][0]) for info in infos]
