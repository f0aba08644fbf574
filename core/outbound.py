"""Requests to URLs that users choose (webhooks): never to the service's own networks (SSRF).

A user-supplied URL must not make the service talk to what only the service can reach: its loopback (the API,
Ray's dashboard, the S3 server), the cloud's metadata endpoint (169.254.169.254, link-local), the cluster's
private networks. `resolve` resolves the host, checks every address it resolves to (one bad address refuses
the host: a name that answers with both a public and a private address is an attack, not an accident), and
returns them; the sender then connects to a checked address itself, never resolving again, so an answer that
changes between the check and the connection (DNS rebinding) cannot slip through. An operator allows
networks explicitly (`TRAINYARD_WEBHOOK_ALLOWED_NETWORKS`, e.g. a receiver on the cluster's own network).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[..., list[tuple[Any, ...]]]

ALLOW_SETTING = "TRAINYARD_WEBHOOK_ALLOWED_NETWORKS"


class OutboundRefused(ValueError):
    """The URL may not be called: its message says why and what to do."""


@dataclass(frozen=True)
class Target:
    """Where a checked URL leads: the addresses to connect to, and what to say to the server there."""

    scheme: str
    host: str  # as the URL names it: the Host header and, over https, the certificate's name (SNI)
    port: int
    path: str  # path and query, as sent
    addresses: tuple[IpAddress, ...]

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def url_at(self, address: IpAddress) -> str:
        """The URL with its host replaced by `address`: connecting there cannot resolve the name again."""
        literal = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{literal}:{self.port}{self.path}"


def parse_networks(networks: Sequence[str]) -> list[IpNetwork]:
    return [ipaddress.ip_network(n, strict=False) for n in networks]


def check_url(url: str) -> SplitResult:
    """The URL's shape: http(s), a host, no user or password in it (it would be shown with the job)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused(f"must be an http:// or https:// URL, got {parts.scheme or 'no'} scheme")
    if not parts.hostname:
        raise OutboundRefused("must name a host, e.g. https://hooks.example.com/trainyard")
    if parts.username is not None or parts.password is not None:
        raise OutboundRefused("must not carry a user or password; authenticate the request by its signature instead")
    try:
        parts.port  # noqa: B018  (raises for a port out of range)
    except ValueError as e:
        raise OutboundRefused(f"has an invalid port: {e}") from None
    return parts


def refusal(address: IpAddress, allowed: Sequence[IpNetwork]) -> str | None:
    """Why the service may not connect to `address` (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(address in network for network in allowed):
        return None
    for kind, matches in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ):
        if matches:
            return kind
    return None if address.is_global else "not publicly routable"


def resolve(url: str, allowed: Sequence[IpNetwork], resolver: Resolver = socket.getaddrinfo) -> Target:
    """Check `url` and every address its host resolves to; raise `OutboundRefused` saying which and why."""
    parts = check_url(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = resolver(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise OutboundRefused(f"host {host!r} does not resolve ({e})") from None
    addresses = tuple(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in found))
    if not addresses:
        raise OutboundRefused(f"host {host!r} does not resolve")
    for address in addresses:
        why = refusal(address, allowed)
        if why is not None:
            shown = f"{host!r} resolves to {address}" if str(address) != host else str(address)
            raise OutboundRefused(
                f"{shown}, a {why} address: the service does not call its own networks; use a public address, "
                f"or an operator allows the network with {ALLOW_SETTING}"
            )
    path = parts.path or "/"
    return Target(parts.scheme, host, port, f"{path}?{parts.query}" if parts.query else path, addresses)
