"""Endpoint safety: notifications go only to globally routable addresses, unless allowed.

An address is refused when it is not globally routable (:func:`refusal`): loopback, private,
shared (``100.64.0.0/10``), link-local, multicast, broadcast, reserved, unspecified,
``0.0.0.0/8``, IPv6 unique-local and site-local; an IPv6 address that wraps an IPv4 address
(IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) is also judged by the address it wraps.
Networks in ``FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS`` are let through.

The check runs twice per attempt: :meth:`EndpointGuard.check_url` before sending (a clear error
for the delivery record), and :class:`GuardedResolver` inside the HTTP client's connector, which
checks every address a name resolves to right before connecting, so a DNS answer that changes
between the two (DNS rebinding) cannot reach an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from fhirbots.engine.delivery.errors import EndpointRefused

__all__ = ["ALLOWED_SCHEMES", "EndpointGuard", "GuardedResolver", "Lookup", "refusal"]

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Lookup = Callable[[str, int], Awaitable[list[IpAddress]]]
"""``(host, port) -> addresses``: how the guard resolves names (the system's resolver unless a
test gives another)."""

ALLOWED_SCHEMES = frozenset({"http", "https"})
"""rest-hook endpoints are HTTP(S) URLs."""

_NAT64 = (ipaddress.ip_network("64:ff9b::/96"),)
"""Well-known NAT64 prefix: the last 32 bits are an IPv4 address."""

_REFUSED_V6 = (
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215)
    ipaddress.ip_network("fec0::/10"),  # site-local (deprecated, still routed inside sites)
    ipaddress.ip_network("100::/64"),  # discard-only
)
_REFUSED_V4 = (
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("100.64.0.0/10"),  # shared address space (carrier NAT, cloud metadata)
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("198.18.0.0/15"),  # benchmarking
    ipaddress.ip_network("255.255.255.255/32"),
)

_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+))*\.?$", re.IGNORECASE)
"""A host made only of numbers (decimal, octal ``0177``, hex ``0x7f``): C's ``inet_aton`` reads
``2130706433`` or ``0x7f.1`` as 127.0.0.1, so anything numeric that is not a canonical
dotted quad is refused rather than guessed at."""


def _wrapped(address: ipaddress.IPv6Address) -> Iterator[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if address.ipv4_mapped is not None:
        yield address.ipv4_mapped
    if address.sixtofour is not None:
        yield address.sixtofour
    if address.teredo is not None:
        yield from address.teredo
    packed = int(address)
    if any(address in net for net in _NAT64) or (packed >> 32 == 0 and packed > 1):
        yield ipaddress.IPv4Address(packed & 0xFFFFFFFF)  # NAT64, or IPv4-compatible ::a.b.c.d


def _own_refusal(address: IpAddress) -> str | None:
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_site_local or any(address in net for net in _REFUSED_V6):
            return "site-local or local-use"
    elif any(address in net for net in _REFUSED_V4):
        return "reserved for special use"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "not globally routable"
    return None


def refusal(address: IpAddress) -> str | None:
    """Why ``address`` is not a globally routable destination, or None when it is.

    An IPv6 address wrapping an IPv4 address is refused when the IPv4 address is.
    """
    if isinstance(address, ipaddress.IPv6Address) and any(address in n for n in _NAT64):
        inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        why = _own_refusal(inner)  # the prefix itself is merely a translator's
        return None if why is None else f"wraps {inner}, which is {why}"
    found = _own_refusal(address)
    if found is not None:
        return found
    if isinstance(address, ipaddress.IPv6Address):
        for inner in _wrapped(address):
            why = _own_refusal(inner)
            if why is not None:
                return f"wraps {inner}, which is {why}"
    return None


async def system_lookup(host: str, port: int) -> list[IpAddress]:
    """The addresses the system's resolver gives for ``host``."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


@dataclass(frozen=True)
class EndpointGuard:
    """Refuses endpoints that resolve to addresses outside the global internet and ``allowed``.

    Attributes:
        allowed: Networks that may be called although they are not globally routable.
        lookup: How names are resolved (the system's resolver by default).
    """

    allowed: tuple[IpNetwork, ...] = ()
    lookup: Lookup = field(default=system_lookup, compare=False)

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str], *, lookup: Lookup = system_lookup) -> EndpointGuard:
        """A guard allowing the given CIDR blocks (e.g. ``127.0.0.1/32``).

        Raises:
            ValueError: A block is not a valid network.
        """
        networks = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)
        return cls(networks, lookup)

    def _allowed(self, address: IpAddress) -> bool:
        candidates: list[IpAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in net for a in candidates for net in self.allowed if net.version == a.version)

    def check_address(self, host: str, address: IpAddress) -> None:
        """Refuse ``address`` (of ``host``) unless it is globally routable or allowed.

        Raises:
            EndpointRefused: Naming the address, why, and how to allow it.
        """
        why = refusal(address)
        if why is None or self._allowed(address):
            return
        raise EndpointRefused(
            f"endpoint host {host!r} resolves to {address} ({why}), not a globally routable "
            f"address; allow it with FHIRBOTS_ALLOWED_ENDPOINT_NETWORKS (e.g. {address}/"
            f"{address.max_prefixlen})"
        )

    def check_syntax(self, url: str) -> str:
        """The host of ``url`` if it is an http(s) URL with a host in a form we can judge.

        Raises:
            EndpointRefused: Another scheme, no host, or a numeric host that is not a
                canonical IPv4 or IPv6 address (``2130706433``, ``0x7f.1``, ``017700000001``).
        """
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
        except ValueError as exc:
            raise EndpointRefused(f"endpoint {url!r} is not a valid URL: {exc}") from exc
        if parts.scheme.lower() not in ALLOWED_SCHEMES:
            raise EndpointRefused(f"endpoint {url!r}: scheme must be http or https")
        if not host:
            raise EndpointRefused(f"endpoint {url!r} has no host")
        if _literal(host) is None and _NUMERIC_HOST.match(host):
            raise EndpointRefused(
                f"endpoint host {host!r} is a number but not a dotted-quad IPv4 address; "
                "write the address as a.b.c.d"
            )
        return host

    async def check_url(self, url: str) -> None:
        """Refuse ``url`` unless it is http(s) and every address of its host may be called.

        Raises:
            EndpointRefused: Bad scheme, no host, unresolvable, or a refused address.
        """
        host = self.check_syntax(url)
        for address in await self.resolve(host, urlsplit(url).port or 443):
            self.check_address(host, address)

    async def resolve(self, host: str, port: int) -> list[IpAddress]:
        """Every address of ``host`` (a literal address is its own answer).

        Raises:
            EndpointRefused: The name does not resolve.
        """
        literal = _literal(host)
        if literal is not None:
            return [literal]
        try:
            found = await self.lookup(host, port)
        except OSError as exc:
            raise EndpointRefused(f"endpoint host {host!r} does not resolve: {exc}") from exc
        if not found:
            raise EndpointRefused(f"endpoint host {host!r} has no address")
        return found


def _literal(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """The HTTP client's resolver: every address of a name is checked before it is used.

    aiohttp connects to what its resolver answers, so checking here leaves no gap between the
    check and the connection. An answer with any refused address is refused as a whole.

    Args:
        guard: The rules addresses are checked against (and how names are resolved).
    """

    def __init__(self, guard: EndpointGuard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The checked addresses of ``host``; raises :class:`EndpointRefused` for any refusal."""
        addresses = await self._guard.resolve(host, port)
        results: list[ResolveResult] = []
        for address in addresses:
            self._guard.check_address(host, address)
            if family not in (socket.AF_UNSPEC, _family(address)):
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=str(address),
                    port=port,
                    family=_family(address),
                    proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            raise EndpointRefused(f"endpoint host {host!r} has no address of the wanted family")
        return results

    async def close(self) -> None:
        """Nothing to release."""


def _family(address: IpAddress) -> socket.AddressFamily:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6
