"""The agent's collectors on this machine: real psutil and netlink, the simulated GPU backend."""

from __future__ import annotations

import logging
import math
import socket
import time
from collections import Counter

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from edge_agent.collectors import default_collectors
from edge_agent.collectors.gpu import METRICS, PROCESSES, REDUNDANT, GpuCollector
from edge_agent.collectors.host import HostCollector
from edge_agent.collectors.network import NetworkCollector, link_samples
from edge_agent.collectors.runner import Collectors
from edge_agent.collectors.workloads import ContainerStatus, WorkloadCollector
from edge_agent.gpu import SimulatedBackend, XidEvent
from edge_agent.outbox import Sample

NOW = 1_700_000_000.0


def by_metric(samples: list[Sample]) -> dict[str, list[Sample]]:
    grouped: dict[str, list[Sample]] = {}
    for sample in samples:
        grouped.setdefault(sample[1], []).append(sample)
    return grouped


def one(samples: list[Sample], metric: str, **labels: str) -> float:
    [value] = [v for _, m, v, lab in samples if m == metric and labels.items() <= lab.items()]
    return value


def test_host_collector_reads_this_machine():
    samples = HostCollector().collect(NOW)
    assert all(ts == NOW and isinstance(v, float) for ts, _, v, _ in samples)
    assert 0 <= one(samples, "host_cpu_utilization_percent") <= 100
    assert 0 < one(samples, "host_memory_used_bytes") <= one(samples, "host_memory_total_bytes")
    assert {"host_load1", "host_load5", "host_load15"} <= by_metric(samples).keys()
    root = {"mountpoint": "/"}
    assert (
        0
        < one(samples, "host_filesystem_used_bytes", **root)
        <= one(samples, "host_filesystem_size_bytes", **root)
    )
    disks = {lab["disk"] for _, m, _, lab in samples if m == "host_disk_read_bytes_total"}
    assert not {d for d in disks if d.startswith(("loop", "ram", "zram"))}


def test_network_collector_counts_loopback_traffic():
    collector = NetworkCollector()
    try:
        before = collector.collect(NOW)
        assert one(before, "net_mtu_bytes", interface="lo") > 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.bind(("127.0.0.1", 0))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
                for _ in range(10):
                    tx.sendto(b"x" * 1000, rx.getsockname())
        after = collector.collect(NOW)
    finally:
        collector.close()
    for metric in ("net_receive_bytes_total", "net_transmit_bytes_total"):
        grown = one(after, metric, interface="lo") - one(before, metric, interface="lo")
        assert grown >= 10_000, metric
    lo = {m for _, m, _, lab in after if lab["interface"] == "lo"}
    assert {"net_receive_errors_total", "net_transmit_drops_total", "net_up"} <= lo


def test_bond_member_state_comes_from_slave_info():
    """No bonding module here, so a kernel-format message is built and parsed by pyroute2."""
    msg = ifinfmsg()
    msg["index"] = 5
    slave = {"attrs": [("IFLA_BOND_SLAVE_STATE", 1), ("IFLA_BOND_SLAVE_MII_STATUS", 0)]}
    msg["attrs"] = [
        ("IFLA_IFNAME", "eth1"),
        ("IFLA_OPERSTATE", "UP"),
        ("IFLA_MASTER", 7),
        (
            "IFLA_LINKINFO",
            {"attrs": [("IFLA_INFO_SLAVE_KIND", "bond"), ("IFLA_INFO_SLAVE_DATA", slave)]},
        ),
    ]
    msg.encode()
    link = ifinfmsg(msg.data)
    link.decode()
    samples = link_samples(NOW, link, {5: "eth1", 7: "bond0"})
    member = {"interface": "eth1", "bond": "bond0"}
    assert one(samples, "net_bond_member_active", **member) == 0.0, "state 1 is backup"
    assert one(samples, "net_bond_member_link_up", **member) == 1.0
    assert one(samples, "net_up", interface="eth1") == 1.0


def test_simulated_8xh100_samples_are_all_marked_simulated():
    backend = SimulatedBackend("8xH100-80GB")
    samples = GpuCollector(backend).collect(NOW)
    assert {lab["gpu"] for _, _, _, lab in samples} == {str(i) for i in range(8)}
    assert {lab["simulated"] for _, _, _, lab in samples} == {"true"}
    assert {lab["product"] for _, _, _, lab in samples} == {"NVIDIA H100 80GB HBM3"}
    assert len({lab["uuid"] for _, _, _, lab in samples}) == 8
    assert len(by_metric(samples)["gpu_power_watts"]) == 8
    assert 70 <= one(samples, "gpu_power_watts", gpu="3") <= 700
    memory = one(samples, "gpu_memory_total_bytes", gpu="0")
    assert memory == 81559 << 20


def test_every_gpu_reading_has_a_metric_name():
    record = SimulatedBackend("8xH100-80GB").sample(expensive=True)[0]
    unmapped = set(record.metrics) - METRICS.keys() - REDUNDANT - {PROCESSES}
    assert not unmapped


def test_expensive_gpu_fields_keep_their_slower_cadence():
    collector = GpuCollector(SimulatedBackend("1xH200-141GB", expensive_every=3))
    energy = ["gpu_energy_joules_total" in by_metric(collector.collect(NOW)) for _ in range(6)]
    assert energy == [True, False, False, True, False, False]


class XidBackend(SimulatedBackend):
    """The simulated fleet with XIDs the test hands it."""

    def __init__(self, profile: str) -> None:
        super().__init__(profile)
        self.queued: list[XidEvent] = []

    def events(self) -> list[XidEvent]:
        drained, self.queued = self.queued, []
        return drained


def test_xid_events_become_a_counter_per_gpu_and_xid():
    backend = XidBackend("4xA100-40GB")
    collector = GpuCollector(backend)
    uuid = backend.inventory()[2].uuid
    backend.queued = [XidEvent(2, uuid, 79, NOW, True), XidEvent(2, uuid, 79, NOW + 1, True)]
    first = by_metric(collector.collect(NOW))["gpu_xid_errors_total"]
    backend.queued = [XidEvent(2, uuid, 79, NOW + 2, True), XidEvent(2, uuid, 48, NOW + 2, True)]
    second = by_metric(collector.collect(NOW))["gpu_xid_errors_total"]
    assert [v for _, _, v, _ in first] == [1.0, 2.0]
    assert sorted((lab["xid"], v) for _, _, v, lab in second) == [("48", 1.0), ("79", 3.0)]
    labels = second[0][3]
    assert (labels["gpu"], labels["uuid"], labels["simulated"]) == ("2", uuid, "true")
    assert not by_metric(collector.collect(NOW)).get("gpu_xid_errors_total"), "only when seen"


def test_unsupported_fields_are_reported_once_per_process():
    collector = GpuCollector(SimulatedBackend("1xL4-24GB"))
    first = by_metric(collector.collect(NOW)).get("gpu_field_unsupported", [])
    assert sorted(lab["field"] for _, _, _, lab in first) == ["mig_mode", "remapped_rows"]
    assert all(lab["product"] == "NVIDIA L4" and lab["simulated"] == "true" for *_, lab in first)
    assert "gpu_field_unsupported" not in by_metric(collector.collect(NOW))


def test_workload_samples_from_container_statuses():
    collector = WorkloadCollector()
    assert collector.collect(NOW) == [], "no managed containers yet"
    collector.statuses = [
        ContainerStatus(name="llm", state="running", restarts=2, health="healthy"),
        ContainerStatus(name="old", state="exited", restarts=0, health=""),
    ]
    samples = collector.collect(NOW)
    assert one(samples, "workload_running", container="llm") == 1.0
    assert one(samples, "workload_restarts_total", container="llm") == 2.0
    assert one(samples, "workload_healthy", container="llm") == 1.0
    assert one(samples, "workload_running", container="old") == 0.0
    assert not [s for s in samples if s[1] == "workload_healthy" and s[3]["container"] == "old"]


class Broken:
    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def collect(self, now: float) -> list[Sample]:
        self.calls += 1
        raise RuntimeError(f"sensor gone{'' if self.calls < 3 else ' again'}")

    def close(self) -> None:
        return None


class Fixed:
    name = "fixed"

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples

    def collect(self, now: float) -> list[Sample]:
        return self.samples

    def close(self) -> None:
        return None


def test_a_failing_collector_does_not_stop_the_others(caplog: pytest.LogCaptureFixture):
    broken = Broken()
    collectors = Collectors([broken, HostCollector()])
    with caplog.at_level(logging.ERROR, "aiorch.agent.collectors"):
        rounds = [by_metric(collectors.collect(NOW)) for _ in range(4)]
    assert all("host_memory_used_bytes" in r for r in rounds)
    assert broken.calls == 4
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2, "once per distinct error: 'sensor gone' and 'sensor gone again'"
    errors = {lab["collector"]: v for _, _, v, lab in rounds[-1]["agent_collector_errors_total"]}
    assert errors == {"broken": 4.0, "host": 0.0}


def test_non_finite_values_never_reach_the_outbox():
    samples = [(NOW, "a", math.nan, {}), (NOW, "b", math.inf, {}), (NOW, "c", 1, {})]
    out = Collectors([Fixed(samples)]).collect(NOW)
    assert [(m, v) for _, m, v, _ in out if m in "abc"] == [("c", 1.0)]


def test_cost_samples_time_every_collector_and_the_agent_itself():
    collectors = default_collectors(SimulatedBackend("8xH100-80GB"))
    try:
        start = time.perf_counter()
        samples = collectors.collect(NOW)
        elapsed = time.perf_counter() - start
    finally:
        collectors.close()
    durations = {
        lab["collector"]: v for _, m, v, lab in samples if m == "agent_collector_duration_seconds"
    }
    assert durations.keys() == {"gpu", "host", "network", "workloads"}
    assert all(d > 0 for d in durations.values()) and sum(durations.values()) <= elapsed
    assert one(samples, "agent_resident_memory_bytes") > 10 << 20
    assert one(samples, "agent_cpu_seconds_total") > 0
    assert Counter(lab.get("simulated") for *_, lab in samples if lab.get("gpu"))["true"] > 8 * 10
