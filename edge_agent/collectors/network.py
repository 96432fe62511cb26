"""Per-interface traffic, errors, link state and bond membership, read from sysfs."""

from __future__ import annotations

from edge_agent import netclass
from edge_agent.netclass import Link
from edge_agent.outbox import Sample

# sysfs statistics/ file -> metric
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


class NetworkCollector:
    """Holds nothing between rounds: each round reads the files afresh."""

    name = "network"

    def collect(self, now: float) -> list[Sample]:
        return [sample for link in netclass.links() for sample in link_samples(now, link)]

    def close(self) -> None:
        return None


def link_samples(now: float, link: Link) -> list[Sample]:
    """Samples of one interface, with its bond's name for a bond member."""
    labels = {"interface": link.name}
    samples: list[Sample] = [
        (now, metric, float(link.counters[field]), labels) for field, metric in _COUNTERS.items()
    ]
    samples.append((now, "net_up", float(link.state == "up"), labels))
    samples.append((now, "net_mtu_bytes", float(link.mtu), labels))
    member = link.bond_member
    if member is None:
        return samples
    bond = {**labels, "bond": member.bond}
    if member.active is not None:
        samples.append((now, "net_bond_member_active", float(member.active), bond))
    if member.link_up is not None:
        samples.append((now, "net_bond_member_link_up", float(member.link_up), bond))
    return samples
