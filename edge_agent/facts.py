"""Host facts the edge agent reports to the hub.

Facts describe the host, not its load: nothing here changes from one minute to
the next, so facts_hash() lets the agent send them only when they change. Each
section is collected on its own; one that fails (a container without
/etc/os-release or /sys, say) becomes None with its error in
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from edge_agent.contract.facts import (
    CONTAINER_RUNTIME,
    CPU,
    CPU_LOGICAL,
    GPUS,
    HOSTNAME,
    MEMORY_TOTAL,
    MODELS,
    SITE_RELEASE,
    SITE_RELEASE_FILE,
    SSH_HOST_KEYS,
    SSH_KEY_RE,
    parse_facts,
)
from edge_agent.contract.fields import ContractError
from edge_agent.gpu import GpuBackend
from edge_agent.netclass import addresses, links

_OS_RELEASE_KEYS = ("ID", "ID_LIKE", "NAME", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME")


def collect_facts(
    gpu_backend: GpuBackend,
    held_models: Callable[[], list[str]] = list,
    release_file: Path = Path(SITE_RELEASE_FILE),
    ssh_dir: Path = Path("/etc/ssh"),
) -> dict[str, Any]:
    """Gathers the host facts as a JSON-ready dict; never raises for a missing source.
    `held_models` lists the model digests in the cache; `release_file` is the site release
    the provisioning role wrote (none before a bundle was imported)."""
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
        SITE_RELEASE: lambda: _site_release(release_file),
        MODELS: held_models,
        SSH_HOST_KEYS: lambda: ssh_host_keys(ssh_dir),
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


def _site_release(path: Path) -> dict[str, Any] | None:
    """{"version", "digest"} from the file, or None where there is none; a file the
    contract refuses is reported as a collection error, like any broken source."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return {"version": data.get("version"), "digest": data.get("digest")}


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


def ssh_host_keys(ssh_dir: Path) -> list[str]:
    """This host's SSH host keys as "TYPE BASE64" (comments dropped), sorted: the hub pins
    them for the runs it makes on a machine it provisioned, instead of trusting first use."""
    keys = []
    for path in sorted(ssh_dir.glob("ssh_host_*_key.pub")):
        key = " ".join(path.read_text().split()[:2])
        if SSH_KEY_RE.match(key):
            keys.append(key)
    return sorted(keys)


def _network_interfaces() -> list[dict[str, Any]]:
    """Links (sysfs) with their addresses (getifaddrs), sorted by name for a stable hash."""
    by_name = addresses()
    return [
        {
            "name": link.name,
            "mac": link.mac,
            "mtu": link.mtu,
            "state": link.state,
            "admin_up": link.admin_up,
            "addresses": by_name.get(link.name, []),
        }
        for link in links()
    ]
