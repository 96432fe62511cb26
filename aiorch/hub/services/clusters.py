"""The Slurm clusters the inventory declares, and the keys the hub holds for them.

A cluster is the inventory group `aiorch_slurm` (the hosts `playbooks/slurm.yml` converges),
named by `aiorch_slurm_cluster`; its controller is `aiorch_slurm_controller`, else the group's
first host in sorted order: the rule the role applies, so both sides agree without a second
list to keep in step.

The hub writes the munge key and the JWT key once, into its data folder (0600), and hands
their paths to every run; the role copies them to the hosts. Holding the JWT key, the hub
mints its own short-lived tokens, so no token is stored anywhere and none expires while a
site is offline.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from aiorch.ansible.runner import list_inventory
from aiorch.hub.context import HubContext
from aiorch.hub.services import inventory

GROUP = "aiorch_slurm"
KEY_DIR = "slurm"
JWT_KEY, MUNGE_KEY = "jwt_hs256.key", "munge.key"
_KEY_BYTES = {JWT_KEY: 32, MUNGE_KEY: 1024}
DEFAULTS: dict[str, Any] = {  # the role's defaults for what the hub reads too
    "aiorch_slurm_cluster": "aiorch",
    "aiorch_slurm_rest_port": 6820,
    "aiorch_slurm_job_user": "aiorch-job",
    "aiorch_slurm_output_dir": "/var/lib/aiorch-slurm/output",
}


@dataclass(frozen=True)
class Cluster:
    name: str
    controller: str  # the inventory host running slurmctld and slurmrestd
    hosts: tuple[str, ...]
    rest_port: int
    job_user: str
    output_dir: str


def key_paths(data_dir: Path) -> dict[str, Path]:
    """The hub's two key files, created (random, 0600) the first time they are asked for."""
    folder = data_dir / KEY_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    paths = {}
    for name, size in _KEY_BYTES.items():
        path = paths[name] = folder / name
        if not path.exists():
            _write_new(path, secrets.token_bytes(size))
    return paths


def _write_new(path: Path, data: bytes) -> None:
    """Whole or not at all, never readable by others; a concurrent writer's file is kept."""
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    try:
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)


def run_vars(ctx: HubContext) -> dict[str, str]:
    """Extra vars for every run: where the role finds the keys on the hub."""
    paths = key_paths(ctx.settings.data_dir)
    return {
        "aiorch_slurm_jwt_key_file": str(paths[JWT_KEY]),
        "aiorch_slurm_munge_key_file": str(paths[MUNGE_KEY]),
    }


def known(db: sqlite_utils.Database) -> dict[str, Cluster]:
    """{name: cluster} from the stored inventory."""
    inv = inventory.stored_inventory(db)
    group = inv.groups.get(GROUP)
    if group is None or not group.hosts:
        return {}
    members: dict[str, list[str]] = {}
    settings: dict[str, dict[str, Any]] = {}
    for host in sorted(group.hosts):
        merged = {**DEFAULTS, **group.vars, **inv.hosts[host].vars}
        name = str(merged["aiorch_slurm_cluster"])
        members.setdefault(name, []).append(host)
        settings.setdefault(name, merged)
    first = sorted(group.hosts)[0]
    return {
        name: Cluster(
            name=name,
            controller=str(merged.get("aiorch_slurm_controller") or first),
            hosts=tuple(members[name]),
            rest_port=int(merged["aiorch_slurm_rest_port"]),
            job_user=str(merged["aiorch_slurm_job_user"]),
            output_dir=str(merged["aiorch_slurm_output_dir"]),
        )
        for name, merged in settings.items()
    }


def pick(clusters: dict[str, Cluster], wanted: str | None) -> Cluster | str:
    """The cluster a job goes to (its `cluster`, or the only one), or why there is none."""
    if wanted is not None:
        found = clusters.get(wanted)
        return found or f"no Slurm cluster named {wanted} in the inventory (group {GROUP})"
    if len(clusters) == 1:
        return next(iter(clusters.values()))
    if not clusters:
        return f"multi-node jobs run on a Slurm cluster; the inventory has none (group {GROUP})"
    return f"several Slurm clusters ({', '.join(sorted(clusters))}): name one in spec.cluster"


def hostvars(ctx: HubContext, hosts: set[str]) -> dict[str, dict[str, Any]]:
    """The hosts' vars as a playbook sees them (merged by ansible-inventory), to log in as
    Ansible does. The inventory file, secrets open, lives only as long as the call."""
    with tempfile.TemporaryDirectory(dir=ctx.settings.data_dir) as folder:
        path = Path(folder) / "inventory.yml"
        inventory.write_run_inventory(ctx, path)
        meta = list_inventory(path, export=False).get("_meta", {}).get("hostvars", {})
    return {host: meta.get(host, {}) for host in hosts}
