"""The hub's server certificate names: an address given as a TLS name is an IP SAN (what a
client dialling that address checks, like the lab VM dialling slirp's relay), a host name a
DNS SAN."""

from __future__ import annotations

import ipaddress

from cryptography import x509

from aiorch.hub.pki.listener import listen_names


def test_extra_addresses_are_ip_sans_and_names_dns_sans() -> None:
    names = listen_names(["10.89.0.1"], ["10.0.2.100", "hub.lab.example", "fd00::1"])
    dns = [n.value for n in names if isinstance(n, x509.DNSName)]
    ips = [n.value for n in names if isinstance(n, x509.IPAddress)]
    assert dns == ["hub.lab.example", "localhost"]
    assert ips == [ipaddress.ip_address(a) for a in ("10.0.2.100", "10.89.0.1", "127.0.0.1",
                                                      "fd00::1")]  # fmt: skip
