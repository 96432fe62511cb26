"""The agent's collectors on this machine: real psutil and sysfs, the simulated GPU backend;
netlink (pyroute2, in the tests only) as the reference the sysfs reader is held to."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from edge_agent import netclass
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


def netlink_links() -> dict[str, dict[str, Any]]:
    """The kernel's links as netlink reports them, in the reader's terms."""
    with IPRoute() as ipr:
        found = ipr.get_links()
    return {
        link.get_attr("IFLA_IFNAME"): {
            "mac": link.get_attr("IFLA_ADDRESS"),
            "mtu": link.get_attr("IFLA_MTU"),
            "state": link.get_attr("IFLA_OPERSTATE").lower(),
            "admin_up": bool(link["flags"] & 0x1),
            "counters": {f: link.get_attr("IFLA_STATS64")[f] for f in netclass.COUNTERS},
        }
        for link in found
    }


def test_sysfs_links_match_netlink_on_this_machine():
    """Read between two netlink dumps: lab hosts come and go here, so only links unchanged
    across both are compared, and each counter must lie between its two netlink readings."""
    before = netlink_links()
    read = {link.name: link for link in netclass.links()}
    after = netlink_links()
    assert before.keys() & after.keys() <= read.keys() <= before.keys() | after.keys()
    steady = {
        name
        for name in before.keys() & after.keys() & read.keys()
        if {**before[name], "counters": None} == {**after[name], "counters": None}
    }
    assert "lo" in steady and len(steady) >= 2, "loopback and at least one other link"
    for name in sorted(steady):
        link, kernel = read[name], before[name]
        assert (link.mac, link.mtu, link.state, link.admin_up) == (
            kernel["mac"],
            kernel["mtu"],
            kernel["state"],
            kernel["admin_up"],
        ), name
        for field in netclass.COUNTERS:
            low, high = kernel["counters"][field], after[name]["counters"][field]
            assert low <= link.counters[field] <= high, (name, field)


def fake_sysfs_link(root: Path, name: str, **files: str) -> Path:
    """A directory laid out as the kernel lays out /sys/class/net/<name>."""
    path = root / name
    (path / "statistics").mkdir(parents=True)
    for field in netclass.COUNTERS:
        (path / "statistics" / field).write_text("7\n")
    defaults = {"address": "02:00:00:00:00:01", "mtu": "9000", "operstate": "up", "flags": "0x1003"}
    for file, text in {**defaults, **files}.items():
        (path / file).write_text(f"{text}\n")
    return path


def test_bond_member_state_comes_from_bonding_slave_files(tmp_path: Path):
    """Simulated: this kernel has no bonding module, so a bond and its members are laid out in a
    directory as the kernel's bonding driver lays them out in sysfs."""
    fake_sysfs_link(tmp_path, "bond0")
    for name, state, mii in (("eth1", "backup", "up"), ("eth2", "active", "down")):
        member = fake_sysfs_link(tmp_path, name)
        (member / "bonding_slave").mkdir()
        (member / "bonding_slave" / "state").write_text(f"{state}\n")
        (member / "bonding_slave" / "mii_status").write_text(f"{mii}\n")
        (member / "master").symlink_to("../bond0")
    bridge_port = fake_sysfs_link(tmp_path, "veth0", operstate="lowerlayerdown")
    (bridge_port / "master").symlink_to("../bond0")  # a bridge port has `master` too
    samples = [s for link in netclass.links(tmp_path) for s in link_samples(NOW, link)]
    eth1, eth2 = {"interface": "eth1", "bond": "bond0"}, {"interface": "eth2", "bond": "bond0"}
    assert one(samples, "net_bond_member_active", **eth1) == 0.0, "backup"
    assert one(samples, "net_bond_member_link_up", **eth1) == 1.0
    assert one(samples, "net_bond_member_active", **eth2) == 1.0
    assert one(samples, "net_bond_member_link_up", **eth2) == 0.0
    bonded = {lab["interface"] for _, m, _, lab in samples if m.startswith("net_bond_")}
    assert bonded == {"eth1", "eth2"}
    assert one(samples, "net_up", interface="eth1") == 1.0
    assert one(samples, "net_up", interface="veth0") == 0.0
    assert one(samples, "net_mtu_bytes", interface="bond0") == 9000.0
    assert one(samples, "net_receive_drops_total", interface="eth2") == 7.0


def test_a_link_removed_while_it_is_read_is_left_out(tmp_path: Path):
    fake_sysfs_link(tmp_path, "eth0")
    (fake_sysfs_link(tmp_path, "veth9") / "mtu").unlink()  # a lab host stopping
    assert [link.name for link in netclass.links(tmp_path)] == ["eth0"]


@pytest.fixture
def veth_namespace() -> Iterator[str]:
    """A network namespace of this test's own with a veth pair in it."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to build interfaces")
    name = f"aiorch-netclass-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in (
            "link add va type veth peer name vb",
            "link set va mtu 1400 address 02:00:00:00:99:0a up",
            "link set vb address 02:00:00:00:99:0b",
            "addr add 10.99.0.1/24 dev va",
            "addr add 10.99.0.2/24 label va:1 dev va",
            "link set lo up",
        ):
            subprocess.run(["ip", "-n", name, *command.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_facts_and_collector_read_interfaces_built_in_a_namespace(veth_namespace: str):
    """`ip netns exec` mounts the namespace's own /sys, as a container gets its own."""
    code = (
        "import json; from edge_agent.facts import _network_interfaces; "
        "from edge_agent.collectors.network import NetworkCollector; "
        "print(json.dumps([_network_interfaces(), NetworkCollector().collect(0.0)]))"
    )
    argv = ["ip", "netns", "exec", veth_namespace, sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
    interfaces, samples = json.loads(done.stdout)
    by_name = {i["name"]: i for i in interfaces}
    assert [i["name"] for i in interfaces] == ["lo", "va", "vb"]
    va, vb = by_name["va"], by_name["vb"]
    assert (va["mac"], va["mtu"], va["admin_up"], va["state"]) == (
        "02:00:00:00:99:0a",
        1400,
        True,
        "lowerlayerdown",
    ), "up, but its peer is down"
    assert (vb["mac"], vb["admin_up"], vb["state"]) == ("02:00:00:00:99:0b", False, "down")
    ipv4 = [a for a in va["addresses"] if a["family"] == "ipv4"]
    assert ipv4 == [
        {"family": "ipv4", "address": "10.99.0.1", "prefixlen": 24},
        {"family": "ipv4", "address": "10.99.0.2", "prefixlen": 24},
    ], "the labelled address va:1 belongs to va"
    assert {"family": "ipv6", "address": "::1", "prefixlen": 128} in by_name["lo"]["addresses"]
    assert one(samples, "net_mtu_bytes", interface="va") == 1400.0
    assert one(samples, "net_up", interface="va") == 0.0
    assert one(samples, "net_receive_bytes_total", interface="vb") == 0.0


def test_the_agent_never_loads_pyroute2():
    """pyroute2's import alone is about 23 MB of the agent's 40 MB budget: every agent module,
    a facts report and a collection round must do without it."""
    code = (
        "import pkgutil, importlib, sys, edge_agent\n"
        "for m in pkgutil.walk_packages(edge_agent.__path__, 'edge_agent.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "from edge_agent.collectors import default_collectors\n"
        "from edge_agent.facts import collect_facts\n"
        "from edge_agent.gpu import NullBackend\n"
        "assert collect_facts(NullBackend())['network_interfaces']\n"
        "default_collectors(NullBackend()).collect(0.0)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'pyroute2'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


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
