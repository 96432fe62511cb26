"""The host's network interfaces, read from the kernel's stable file interfaces.

Links, their counters and bond membership come from `/sys/class/net` and addresses from
getifaddrs (psutil), the way node_exporter's netclass, netdev and bonding collectors read them.
Not netlink: importing pyroute2 alone costs about 23 MB of resident memory, more than half the
agent's 40 MB budget. Facts and the network collector both read through this one module.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

SYSFS_NET = Path("/sys/class/net")
# statistics/ files, the same fields as netlink's IFLA_STATS64
COUNTERS = (
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
)
_IFF_UP = 0x1  # <net/if.h>: administratively up
_FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
# An interface removed while it is read (a container stopping) is left out, not an error.
_GONE = (errno.ENOENT, errno.ENODEV)


@dataclass(frozen=True)
class BondMember:
    """A bond member's standing, from `bonding_slave/` (None where the kernel gives none)."""

    bond: str
    active: bool | None
    link_up: bool | None


@dataclass(frozen=True)
class Link:
    """One network interface as sysfs shows it."""

    name: str
    mac: str | None
    mtu: int
    state: str  # operstate: "up", "down", "unknown", "lowerlayerdown", ...
    admin_up: bool
    counters: dict[str, int]
    bond_member: BondMember | None


def links(root: Path = SYSFS_NET) -> list[Link]:
    """Every interface under `root`, sorted by name."""
    found = []
    for entry in sorted(os.listdir(root)):
        try:
            found.append(_link(root / entry))
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
    return found


def addresses() -> dict[str, list[dict[str, Any]]]:
    """IPv4 and IPv6 addresses per interface, sorted by (family, address)."""
    by_name: dict[str, list[dict[str, Any]]] = {}
    for name, entries in psutil.net_if_addrs().items():
        for entry in entries:
            family = _FAMILIES.get(entry.family)
            if family is None:
                continue
            # getifaddrs names an IPv4 address by its label ("eth0:1") and scopes link-local
            # IPv6 ("fe80::1%eth0"); interface names never hold ':' (dev_valid_name).
            by_name.setdefault(name.partition(":")[0], []).append(
                {
                    "family": family,
                    "address": entry.address.partition("%")[0],
                    "prefixlen": _prefixlen(family, entry.netmask),
                }
            )
    return {
        name: sorted(found, key=lambda a: (a["family"], a["address"]))
        for name, found in by_name.items()
    }


def _prefixlen(family: str, netmask: str | None) -> int:
    """The prefix length of a contiguous netmask; a host route where getifaddrs gives none."""
    if netmask is None:
        return 32 if family == "ipv4" else 128
    return int(ipaddress.ip_address(netmask)).bit_count()


def _link(path: Path) -> Link:
    address = _read(path / "address")
    return Link(
        name=path.name,
        mac=address or None,  # empty for links without a hardware address (tun, wireguard)
        mtu=int(_read(path / "mtu")),
        state=_read(path / "operstate"),
        admin_up=bool(int(_read(path / "flags"), 16) & _IFF_UP),
        counters={field: int(_read(path / "statistics" / field)) for field in COUNTERS},
        bond_member=_bond_member(path),
    )


def _bond_member(path: Path) -> BondMember | None:
    """Present only on a bond's members; `master` names the bond."""
    slave = path / "bonding_slave"
    if not slave.is_dir():
        return None
    state = _read_optional(slave / "state")
    mii = _read_optional(slave / "mii_status")
    return BondMember(
        bond=Path(os.readlink(path / "master")).name,
        active=None if state is None else state == "active",
        link_up=None if mii is None else mii == "up",
    )


def _read(path: Path) -> str:
    return path.read_text().strip()


def _read_optional(path: Path) -> str | None:
    """Older kernels lack some bonding_slave files."""
    try:
        return _read(path)
    except FileNotFoundError:
        return None
