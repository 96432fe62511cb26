"""Network state read through netlink (pyroute2), never by parsing ``ip`` output."""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute

MAIN_TABLE = 254


def _routes(ipr: IPRoute) -> list[tuple[str, str]]:
    """(``dst/len`` or ``default``, interface name) for IPv4 routes in the main table."""
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
    routes = []
    for route in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE):
        dst = route.get_attr("RTA_DST")
        prefix = f"{dst}/{route['dst_len']}" if dst else "default"
        routes.append((prefix, names.get(route.get_attr("RTA_OIF"), "")))
    return routes


def overlapping_routes(subnet: str, except_interface: str) -> list[str]:
    """Routes on this machine, other than via the lab's own bridge, that cover ``subnet``.

    Podman picks a free subnet, but it only knows its own networks; a VPN or a
    second bridge could already use the range, and then hosts would be unreachable.
    """
    lab = ipaddress.ip_network(subnet)
    with IPRoute() as ipr:
        return [
            f"{prefix} dev {dev}"
            for prefix, dev in _routes(ipr)
            if prefix != "default"
            and dev != except_interface
            and ipaddress.ip_network(prefix, strict=False).overlaps(lab)
        ]


def interface_addresses(interface: str) -> list[str]:
    """IPv4 addresses on an interface of this machine ([] while it does not exist)."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=interface)
        if not index:
            return []
        return [
            a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET, index=index[0])
        ]


def namespace_routes(pid: int) -> list[str]:
    """IPv4 main-table routes inside the network namespace of process ``pid`` (a lab host)."""
    with IPRoute(netns=f"/proc/{pid}/ns/net") as ipr:
        return [prefix for prefix, _dev in _routes(ipr)]
