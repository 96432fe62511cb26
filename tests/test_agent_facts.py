"""edge_agent.facts on the machine running the tests, and facts_hash."""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import socket
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroute2 import IPRoute

from edge_agent import facts as facts_module
from edge_agent import netclass
from edge_agent.facts import collect_facts, facts_hash
from edge_agent.gpu import NullBackend, SimulatedBackend


@pytest.fixture(scope="module")
def host_facts() -> dict[str, Any]:
    return collect_facts(NullBackend())


def test_facts_describe_this_host(host_facts: dict[str, Any]) -> None:
    assert host_facts["collection_errors"] == {}
    assert host_facts["hostname"] == socket.gethostname()
    assert host_facts["fqdn"]
    assert host_facts["kernel"] == platform.release()
    assert host_facts["architecture"] == platform.machine()
    assert host_facts["cpu"]["logical_count"] == os.cpu_count()
    assert host_facts["memory_total_bytes"] == psutil.virtual_memory().total
    assert host_facts["gpus"] == [] and host_facts["gpu_backend"] == "none"
    json.dumps(host_facts)


def test_os_matches_os_release(host_facts: dict[str, Any]) -> None:
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        assert host_facts["os"] == {}
    else:
        assert host_facts["os"]["id"] == release["ID"]
        assert host_facts["os"]["pretty_name"] == release["PRETTY_NAME"]


def test_loopback_interface_has_127_0_0_1(host_facts: dict[str, Any]) -> None:
    interfaces = {i["name"]: i for i in host_facts["network_interfaces"]}
    lo = interfaces["lo"]
    assert lo["admin_up"] and lo["mtu"] > 0
    assert {"family": "ipv4", "address": "127.0.0.1", "prefixlen": 8} in lo["addresses"]
    names = [i["name"] for i in host_facts["network_interfaces"]]
    assert names == sorted(names)


def test_interfaces_match_the_kernel(host_facts: dict[str, Any]) -> None:
    kernel_view = psutil.net_if_stats()
    assert {i["name"] for i in host_facts["network_interfaces"]} == set(kernel_view)
    for iface in host_facts["network_interfaces"]:
        assert iface["mtu"] == kernel_view[iface["name"]].mtu
        assert iface["admin_up"] == kernel_view[iface["name"]].isup


def netlink_addresses() -> dict[str, list[dict[str, Any]]]:
    """Addresses per interface as netlink reports them (what the agent read before sysfs)."""
    families = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}
    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        found = ipr.get_addr()
    by_name: dict[str, list[dict[str, Any]]] = {name: [] for name in names.values()}
    for msg in found:
        # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
        # links and the only one set for IPv6.
        address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if msg["family"] in families and msg["index"] in names:
            by_name[names[msg["index"]]].append(
                {
                    "family": families[msg["family"]],
                    "address": address,
                    "prefixlen": msg["prefixlen"],
                }
            )
    return {
        name: sorted(a, key=lambda a: (a["family"], a["address"])) for name, a in by_name.items()
    }


def test_addresses_match_netlink_on_this_machine() -> None:
    """Lab hosts come and go here: only interfaces unchanged across two netlink dumps count."""
    before = netlink_addresses()
    read = {i["name"]: i["addresses"] for i in facts_module._network_interfaces()}
    after = netlink_addresses()
    steady = {name for name in before.keys() & after.keys() if before[name] == after[name]}
    assert {"lo"} < steady <= read.keys()
    assert {name: read[name] for name in steady} == {name: before[name] for name in steady}


@pytest.mark.parametrize(
    ("family", "netmask", "prefixlen"),
    [
        ("ipv4", "255.255.255.0", 24),
        ("ipv4", "255.255.255.255", 32),
        ("ipv6", "ffff:ffff:ffff:ffff::", 64),
        ("ipv6", "::", 0),
        ("ipv4", None, 32),
        ("ipv6", None, 128),
    ],
)
def test_prefix_length_comes_from_the_netmask(
    family: str, netmask: str | None, prefixlen: int
) -> None:
    assert netclass._prefixlen(family, netmask) == prefixlen


def test_disks_are_sorted_mounts_with_sizes(host_facts: dict[str, Any]) -> None:
    disks = host_facts["disks"]
    assert [d["mountpoint"] for d in disks] == sorted(d["mountpoint"] for d in disks)
    for disk in disks:
        assert disk["mountpoint"].startswith("/")
        assert disk["total_bytes"] is None or disk["total_bytes"] > 0


def test_simulated_gpus_appear_marked_in_facts() -> None:
    backend = SimulatedBackend("8xH100-80GB")
    facts = collect_facts(backend)
    assert facts["gpu_backend"] == "simulated:8xH100-80GB"
    assert facts["gpus"] == [gpu.to_dict() for gpu in backend.inventory()]
    assert len(facts["gpus"]) == 8 and all(gpu["simulated"] for gpu in facts["gpus"])


def test_missing_os_release_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_os_release() -> dict[str, str]:
        raise FileNotFoundError("/etc/os-release")

    monkeypatch.setattr(facts_module.platform, "freedesktop_os_release", no_os_release)
    facts = collect_facts(NullBackend())
    assert facts["os"] == {}
    assert facts["collection_errors"] == {}


def test_a_failing_source_is_reported_and_the_rest_collected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_sysfs() -> None:
        raise PermissionError("/sys/class/net refused")

    monkeypatch.setattr(facts_module, "links", no_sysfs)
    facts = collect_facts(NullBackend())
    assert facts["network_interfaces"] is None
    assert facts["collection_errors"] == {
        "network_interfaces": "PermissionError: /sys/class/net refused"
    }
    assert facts["hostname"] == socket.gethostname()


def test_cpu_model_falls_back_to_hardware_line(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\n")
    assert facts_module._cpu_model(cpuinfo) == "BCM2835"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9654\n")
    assert facts_module._cpu_model(cpuinfo) == "AMD EPYC 9654"


# --- facts_hash ----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(item) for item in value]
    return value


@settings(max_examples=50)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_hash_ignores_key_order(facts: dict[str, Any]) -> None:
    assert facts_hash(reversed_keys(facts)) == facts_hash(facts)


def test_hash_changes_when_a_fact_changes(host_facts: dict[str, Any]) -> None:
    changed = copy.deepcopy(host_facts)
    changed["network_interfaces"][0]["mtu"] += 1
    assert facts_hash(changed) != facts_hash(host_facts)
    assert len(facts_hash(host_facts)) == 64
    int(facts_hash(host_facts), 16)


def test_hash_is_stable_across_collections() -> None:
    backend = SimulatedBackend("1xL4-24GB")
    assert facts_hash(collect_facts(backend)) == facts_hash(collect_facts(backend))


def test_container_runtime_is_podman_when_it_is_installed(
    host_facts: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert host_facts["container_runtime"] == ("podman" if shutil.which("podman") else None)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert collect_facts(NullBackend())["container_runtime"] is None
