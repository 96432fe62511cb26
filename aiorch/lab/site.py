"""What a lab host needs to run `playbooks/site.yml`: a data disk and the site's variables.

Lab hosts are containers without udev, spare disks or network drivers, so the lab stands in
for them: the "data disk" is an image file mounted with `loop`, and the managed interface is
a port-less bridge (the lab kernel has no dummy, VLAN or bonding driver). The demo, the
provisioning tests and the provisioning benchmark all use these same variables.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from aiorch.lab.fleet import Lab
from aiorch.lab.layout import DC, placement

DATA_DISK = "/var/lib/aiorch-disk0.img"
# The lab's Slurm cluster (playbooks/slurm.yml): the datacenter host and one edge box.
SLURM_GROUP = "aiorch_slurm"
SLURM_HOSTS = ("dc1-1", "edge1-1")
SIMULATED_GPUS = "simulated:4xH100-80GB"


def prepare_disks(lab: Lab) -> None:
    """Give every host its data disk (an empty image file) unless it has one."""
    for host in lab.hosts:
        lab.exec(host.name, ["sh", "-c", f"test -e {DATA_DISK} || truncate --size=64M {DATA_DISK}"])


def site_vars(
    lab: Lab, index: int, *, repo_url: str, hub_url: str, keyring_file: Path | None = None
) -> dict[str, Any]:
    """Host variables for the host with `index`; `repo_url` and `hub_url` are https:// (the
    hub serves nothing else). No secrets: the enrollment token is passed as an extra var at
    run time, so it is never stored with the inventory. Nor the hub's CA: the hub adds its
    path (`aiorch_hub_ca_file`) to every run it starts. `keyring_file` is the repository's
    signing keyring on the hub, for hubs that do not pass it to their runs."""
    extra = {"aiorch_site_repo_keyring_file": str(keyring_file)} if keyring_file else {}
    return {
        **extra,
        "aiorch_site_repo_url": repo_url,
        "aiorch_base_ntp_servers": [lab.gateway],
        "aiorch_storage_filesystems": [{"device": DATA_DISK, "fstype": "ext4"}],
        "aiorch_storage_mounts": [
            {"path": "/srv/data", "src": DATA_DISK, "fstype": "ext4", "opts": "loop"},
            {"path": "/srv/models", "src": "/srv/data/models", "fstype": "none", "opts": "bind"},
        ],
        "aiorch_storage_model_cache": {
            "path": "/srv/models/cache",
            "owner": "root",
            "group": "root",
            "mode": "0750",
        },
        "aiorch_network_interfaces": [
            {
                "name": "aiorch0",
                "kind": "bridge",
                "addresses": [f"192.0.2.{10 + index}/24"],
                "mtu": 9000,
                "configure_without_carrier": True,
            }
        ],
        "aiorch_edge_agent_hub_url": hub_url,
        "aiorch_edge_agent_gpu_backend": gpu_backend(index),
    }


def gpu_backend(index: int) -> str:
    """The lab's datacenter host has simulated GPUs (always reported as simulated), so that
    GPU-aware placement, jobs and GPU-hours show in the lab; edge boxes have none."""
    return SIMULATED_GPUS if placement(index) == DC else "none"


def write_site_inventory(
    lab: Lab, dest: Path, *, repo_url: str, hub_url: str, keyring_file: Path | None = None
) -> Path:
    """The lab's inventory with every host's site variables added, as one YAML file."""
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    hosts = {h.name: h for h in lab.hosts}
    for group in _groups(inventory):
        for name, values in (group.get("hosts") or {}).items():
            if name in hosts and values is not None and "ansible_host" in values:
                index = hosts[name].index
                values.update(
                    site_vars(
                        lab, index, repo_url=repo_url, hub_url=hub_url, keyring_file=keyring_file
                    )
                )
    add_slurm_group(inventory, hosts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return dest


def _groups(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for group in node.values():
        if isinstance(group, dict):
            out.append(group)
            out.extend(_groups(group.get("children") or {}))
    return out


def add_slurm_group(inventory: dict[str, Any], hosts: Collection[str]) -> None:
    """The `aiorch_slurm` group (the lab's Slurm hosts among `hosts`) in an `all: children:`
    inventory. Only slurm.yml targets it; site.yml's plays run on `all` and read none of it."""
    members = [name for name in SLURM_HOSTS if name in hosts]
    if members:
        inventory["all"].setdefault("children", {})[SLURM_GROUP] = {
            "hosts": dict.fromkeys(members),
            "vars": {"aiorch_slurm_cluster": "lab"},
        }
