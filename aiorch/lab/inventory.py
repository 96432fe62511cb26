"""The lab as Ansible sees it: a YAML inventory and the known_hosts file it trusts.

Host-key checking stays on: ssh is pointed at a known_hosts file holding the
keys the hosts really use, read from each host through ``podman exec`` (a
channel that cannot be spoofed on the network).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from aiorch.lab.layout import LabHost


def known_hosts(keys: dict[str, str]) -> str:
    """known_hosts lines from {address: "ssh-ed25519 AAAA... comment"}."""
    lines = []
    for address, key in sorted(keys.items()):
        kind, blob = key.split()[:2]
        lines.append(f"{address} {kind} {blob}\n")
    return "".join(lines)


def render(
    lab: str,
    hosts: Iterable[LabHost],
    key_path: Path,
    known_hosts_path: Path,
) -> dict[str, Any]:
    """Groups per site and per role (``gpu_server``, ``edge_box``); all vars on the hosts.

    Connection vars sit on every host rather than on ``all`` so that an importer
    reading host entries alone (the hub) sees how to reach each host.
    """
    ssh_args = (
        f"-o UserKnownHostsFile={known_hosts_path} -o StrictHostKeyChecking=yes "
        "-o IdentitiesOnly=yes"
    )
    children: dict[str, dict[str, Any]] = {}
    for host in hosts:
        labels = {"lab": lab, "site": host.site, "role": host.role, "region": host.region}
        children.setdefault(host.site, {"hosts": {}})["hosts"][host.name] = {
            "ansible_host": host.address,
            "ansible_port": 22,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key_path),
            "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": "/usr/bin/python3",
            "aiorch_site": host.site,
            "aiorch_role": host.role,
            "aiorch_region": host.region,
            "aiorch_labels": labels,
        }
        role_group = host.role.replace("-", "_")
        children.setdefault(role_group, {"hosts": {}})["hosts"][host.name] = None
    return {"all": {"children": children}}


def write(path: Path, lab: str, inventory: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half an inventory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    header = f"# aiorch lab {lab!r}: written by `aiorch lab up`, removed by `aiorch lab down`.\n"
    tmp.write_text(header + yaml.safe_dump(inventory, sort_keys=False))
    tmp.replace(path)
