"""How a lab is laid out: names, labels, sites and addresses, all derived from the lab name.

Every object the lab makes is named after the lab and carries the ``aiorch.lab``
label, so ``down`` can remove exactly what ``up`` made and nothing else.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from aiorch.errors import UserError

LABEL = "aiorch.lab"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}\Z")
# Host n gets the (n + HOST_OFFSET)-th address of the lab subnet; low ones stay free.
HOST_OFFSET = 10


@dataclass(frozen=True)
class Placement:
    """Where a host sits; the hub turns these into host labels."""

    site: str
    role: str
    region: str


DC = Placement(site="dc1", role="gpu-server", region="eu")
EDGES = (
    Placement(site="edge1", role="edge-box", region="eu"),
    Placement(site="edge2", role="edge-box", region="us"),
)


def check_name(name: str) -> str:
    """Lab names end up in container, network and nft table names; keep them plain."""
    if not NAME_RE.match(name):
        raise UserError(
            f"invalid lab name {name!r}: use 1-24 lowercase letters, digits or '-', "
            "starting with a letter"
        )
    return name


def placement(index: int) -> Placement:
    """Host 1 is the data-centre GPU server; the others alternate between the edge sites."""
    return DC if index == 1 else EDGES[index % 2]


def host_name(index: int) -> str:
    """``dc1-1``, ``edge1-1``, ``edge2-1``, ``edge1-2``, ... (numbered within the site)."""
    return f"{placement(index).site}-{max(1, index // 2)}"


def network_name(lab: str) -> str:
    return f"aiorch-{lab}"


def container_name(lab: str, host: str) -> str:
    return f"aiorch-{lab}-{host}"


def nft_table(lab: str) -> str:
    """nft identifiers take no '-', and lab names take no '_', so this cannot collide."""
    return f"aiorch_lab_{lab.replace('-', '_')}"


def host_address(subnet: str, index: int) -> str:
    """A fixed address per host, so a restarted host comes back where the inventory says."""
    network = ipaddress.ip_network(subnet)
    if index + HOST_OFFSET >= network.num_addresses - 1:
        raise UserError(f"the lab subnet {subnet} has no room for host {index}")
    return str(network.network_address + HOST_OFFSET + index)


def host_mac(address: str) -> str:
    """A fixed, locally administered MAC from the address (unique, as lab subnets are).

    A rebooted container otherwise gets a new MAC while this machine's neighbour
    cache still holds the old one, and SSH to it stalls until that entry expires.
    """
    octets = ipaddress.ip_address(address).packed
    return "02:a1:" + ":".join(f"{b:02x}" for b in octets)


@dataclass(frozen=True)
class LabHost:
    """One host of a lab, as its podman labels describe it."""

    name: str
    index: int
    address: str
    site: str
    role: str
    region: str
    container: str
    state: str
