"""Per-interface traffic, errors, link state and bond membership over netlink (pyroute2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyroute2 import IPRoute

from edge_agent.outbox import Sample

# IFLA_STATS64 field -> metric
_COUNTERS = {
    "rx_bytes": "net_receive_bytes_total",
    "tx_bytes": "net_transmit_bytes_total",
    "rx_packets": "net_receive_packets_total",
    "tx_packets": "net_transmit_packets_total",
    "rx_errors": "net_receive_errors_total",
    "tx_errors": "net_transmit_errors_total",
    "rx_dropped": "net_receive_drops_total",
    "tx_dropped": "net_transmit_drops_total",
}
# <linux/if_bond.h>: IFLA_BOND_SLAVE_STATE 0 is BOND_STATE_ACTIVE; MII status 0 is BOND_LINK_UP.
_BOND_STATE_ACTIVE = 0
_BOND_LINK_UP = 0


class NetworkCollector:
    """Keeps one netlink socket open across rounds; a failed dump closes it so the next round
    starts on a fresh one."""

    name = "network"

    def __init__(self) -> None:
        self._ipr: IPRoute | None = None

    def collect(self, now: float) -> list[Sample]:
        if self._ipr is None:
            self._ipr = IPRoute()
        try:
            links = self._ipr.get_links()
        except Exception:
            self.close()
            raise
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in links}
        return [sample for link in links for sample in link_samples(now, link, names)]

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


def link_samples(now: float, link: Any, names: Mapping[int, str]) -> list[Sample]:
    """Samples of one RTM_NEWLINK message; `names` maps interface indexes to names (for the
    bond a member belongs to)."""
    labels = {"interface": str(link.get_attr("IFLA_IFNAME"))}
    samples: list[Sample] = []
    stats = link.get_attr("IFLA_STATS64")
    if stats is not None:
        for field, metric in _COUNTERS.items():
            value = stats.get(field)
            if value is not None:
                samples.append((now, metric, float(value), labels))
    up = link.get_attr("IFLA_OPERSTATE") == "UP"
    samples.append((now, "net_up", float(up), labels))
    mtu = link.get_attr("IFLA_MTU")
    if mtu is not None:
        samples.append((now, "net_mtu_bytes", float(mtu), labels))
    return samples + _bond_member(now, link, labels, names)


def _bond_member(
    now: float, link: Any, labels: dict[str, str], names: Mapping[int, str]
) -> list[Sample]:
    """Whether a bond member is the active one and has link, from the kernel's slave info
    (best effort: older kernels send none)."""
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_SLAVE_KIND") != "bond":
        return []
    data = info.get_attr("IFLA_INFO_SLAVE_DATA")
    if data is None:
        return []
    member = {**labels, "bond": str(names.get(link.get_attr("IFLA_MASTER"), ""))}
    samples: list[Sample] = []
    state = data.get_attr("IFLA_BOND_SLAVE_STATE")
    if state is not None:
        samples.append((now, "net_bond_member_active", float(state == _BOND_STATE_ACTIVE), member))
    mii = data.get_attr("IFLA_BOND_SLAVE_MII_STATUS")
    if mii is not None:
        samples.append((now, "net_bond_member_link_up", float(mii == _BOND_LINK_UP), member))
    return samples
