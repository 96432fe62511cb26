"""Host facts the edge agent reports to the hub.

Facts describe the host, not its load: nothing here changes from one minute to
the next, so facts_hash() lets the agent send them only when they change. Each
section is collected on its own; one that fails (a container without
/etc/os-release or netlink, say) becomes None with its error in
`collection_errors` instead of failing the whole report. The sections the hub reads are
named and checked by `edge_agent.contract.facts`: a section the hub would refuse is reported
the same way, so the agent never sends facts its hub refuses.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil
from pyroute2 import IPRoute

from edge_agent.contract.facts import (
    CONTAINER_RUNTIME,
    CPU,
    CPU_LOGICAL,
    GPUS,
    HOSTNAME,
    MEMORY_TOTAL,
    parse_facts,
)
from edge_agent.contract.fields import ContractError
from edge_agent.gpu import GpuBackend

_OS_RELEASE_KEYS = ("ID", "ID_LIKE", "NAME", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME")
_IFF_UP = 0x1  # <net/if.h>: administratively up
_FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}


def collect_facts(gpu_backend: GpuBackend) -> dict[str, Any]:
    """Gathers the host facts as a JSON-ready dict; never raises for a missing source."""
    collectors: dict[str, Callable[[], Any]] = {
        HOSTNAME: socket.gethostname,
        "fqdn": socket.getfqdn,
        "os": _os_release,
        "kernel": platform.release,
        "architecture": platform.machine,
        CPU: _cpu,
        MEMORY_TOTAL: lambda: psutil.virtual_memory().total,
        "disks": _disks,
        "network_interfaces": _network_interfaces,
        GPUS: lambda: [gpu.to_dict() for gpu in gpu_backend.inventory()],
        # The hub places workloads only where they can run: "podman", or None without it.
        CONTAINER_RUNTIME: lambda: "podman" if shutil.which("podman") else None,
    }
    facts: dict[str, Any] = {"gpu_backend": gpu_backend.name}
    errors: dict[str, str] = {}
    for key, collect in collectors.items():
        try:
            facts[key] = collect()
        except Exception as exc:  # one broken source must not hide the others
            facts[key] = None
            errors[key] = f"{type(exc).__name__}: {exc}"
    facts["collection_errors"] = errors
    return _checked(facts, errors)


def _checked(facts: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """`facts` with every section the hub would refuse nulled and its error reported."""
    for _ in range(len(facts)):
        try:
            parse_facts(facts)
        except ContractError as exc:
            facts[exc.section] = None
            errors[exc.section] = f"refused by the contract: {exc}"
        else:
            break
    return facts


def facts_hash(facts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace): equal facts hash
    equally whatever their key order."""
    canonical = json.dumps(facts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _os_release() -> dict[str, str]:
    """The identifying os-release keys, lower-cased; {} where the file is missing."""
    try:
        release = platform.freedesktop_os_release()
    except OSError:
        return {}
    return {key.lower(): release[key] for key in _OS_RELEASE_KEYS if key in release}


def _cpu() -> dict[str, Any]:
    return {
        "model": _cpu_model(),
        CPU_LOGICAL: os.cpu_count(),
        "physical_count": psutil.cpu_count(logical=False),
    }


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """x86 says `model name`; many Arm kernels give only `Hardware` or nothing."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        lines = []
    for wanted in ("model name", "Hardware"):
        for line in lines:
            key, _, value = line.partition(":")
            if key.strip() == wanted and value.strip():
                return value.strip()
    return platform.processor() or None


def _disks() -> list[dict[str, Any]]:
    """Mounted physical filesystems with their size (not usage: usage is telemetry)."""
    disks = []
    for part in psutil.disk_partitions(all=False):
        try:
            total: int | None = psutil.disk_usage(part.mountpoint).total
        except OSError:
            total = None
        disks.append(
            {
                "mountpoint": part.mountpoint,
                "device": part.device,
                "fstype": part.fstype,
                "total_bytes": total,
            }
        )
    return sorted(disks, key=lambda d: d["mountpoint"])


def _network_interfaces() -> list[dict[str, Any]]:
    """Links and their addresses over netlink (pyroute2), sorted for a stable hash."""
    with IPRoute() as ipr:
        links = ipr.get_links()
        addrs = ipr.get_addr()
    by_link: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for msg in addrs:
        family = _FAMILIES.get(msg["family"])
        # IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on
        # point-to-point links and the only one set for IPv6.
        address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        if family and address:
            by_link[msg["index"]].append(
                {"family": family, "address": address, "prefixlen": msg["prefixlen"]}
            )
    interfaces = [
        {
            "name": link.get_attr("IFLA_IFNAME"),
            "mac": link.get_attr("IFLA_ADDRESS"),
            "mtu": link.get_attr("IFLA_MTU"),
            "state": (link.get_attr("IFLA_OPERSTATE") or "UNKNOWN").lower(),
            "admin_up": bool(link["flags"] & _IFF_UP),
            "addresses": sorted(by_link[link["index"]], key=lambda a: (a["family"], a["address"])),
        }
        for link in links
    ]
    return sorted(interfaces, key=lambda i: i["name"] or "")
