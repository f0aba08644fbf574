"""The SSRF guard: which addresses a user's URL may lead to, and that every address of a name is checked."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from core.outbound import OutboundRefused, parse_networks, refusal, resolve


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # an IPv4 address written as IPv6 is still that address
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("100.64.0.1", "not publicly routable"),  # carrier-grade NAT: not private, not public either
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("93.184.216.34", None),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
    ],
)
def test_only_public_addresses_may_be_called(address: str, kind: str | None) -> None:
    assert refusal(ipaddress.ip_address(address), []) == kind


def test_an_allowed_network_opens_just_that_network() -> None:
    allowed = parse_networks(["10.20.0.0/16", "127.0.0.1/32"])
    assert refusal(ipaddress.ip_address("10.20.3.4"), allowed) is None
    assert refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert refusal(ipaddress.ip_address("10.21.0.1"), allowed) == "private"
    assert refusal(ipaddress.ip_address("127.0.0.2"), allowed) == "loopback"


def answers(*addresses: str) -> Any:
    """A DNS answer: what getaddrinfo would return for a name."""

    def resolver(host: str, port: int, type: int = 0) -> list[tuple[Any, ...]]:
        family = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [(family[ipaddress.ip_address(a).version], type, 6, "", (a, port)) for a in addresses]

    return resolver


def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    with pytest.raises(OutboundRefused, match=r"'hooks.example.com' resolves to 10.0.0.7, a private address"):
        resolve("https://hooks.example.com/x", [], answers("93.184.216.34", "10.0.0.7"))


def test_a_resolved_target_connects_to_the_checked_address_and_sends_the_name() -> None:
    target = resolve("https://hooks.example.com:8443/in?token=1", [], answers("93.184.216.34", "2606:2800::1"))
    assert target.url_at(target.addresses[0]) == "https://93.184.216.34:8443/in?token=1"
    assert target.url_at(target.addresses[1]) == "https://[2606:2800::1]:8443/in?token=1"
    assert target.host_header == "hooks.example.com:8443"
    assert resolve("http://93.184.216.34", [], answers("93.184.216.34")).host_header == "93.184.216.34"


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def fails(*_: Any, **__: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(OutboundRefused, match="does not resolve"):
        resolve("https://nowhere.invalid/", [], fails)
