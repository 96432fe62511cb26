"""The aiorch_slurm role without a lab: its variables are documented, its packages are in the
site repository, and the lab inventory's `aiorch_slurm` group is what slurm.yml runs on and
nothing else does. The cluster itself is tested in test_jobs_lab.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from aiorch.lab.inventory import render
from aiorch.lab.layout import LabHost, host_name, placement
from aiorch.lab.site import SLURM_GROUP, add_slurm_group
from aiorch.repo.packages import BASE_PACKAGES

PLAYBOOKS = Path(__file__).resolve().parents[1] / "playbooks"
ROLE = PLAYBOOKS / "roles" / "aiorch_slurm"
REQUIRED = {"aiorch_slurm_munge_key_file", "aiorch_slurm_jwt_key_file"}  # no default
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")


def _defaults() -> dict[str, object]:
    return dict(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))


def test_every_variable_the_role_reads_is_documented_in_defaults_and_readme() -> None:
    used: set[str] = set()
    for path in [*ROLE.glob("tasks/*.yml"), *ROLE.glob("handlers/*.yml"), *ROLE.glob("*/*.j2")]:
        used |= set(re.findall(r"\baiorch_slurm_[a-z0-9_]+", path.read_text()))
    defaults_text = (ROLE / "defaults" / "main.yml").read_text()
    readme = (ROLE / "README.md").read_text()
    assert used - set(_defaults()) == REQUIRED
    assert all(name in defaults_text and f"`{name}`" in readme for name in used)


def test_the_roles_packages_are_in_the_site_repository() -> None:
    assert set(_defaults()["aiorch_slurm_packages"]) <= set(BASE_PACKAGES)  # type: ignore[arg-type]


def _lab_inventory(tmp_path: Path, hosts: int = 3) -> Path:
    lab_hosts = [
        LabHost(host_name(i), i, f"10.89.0.{10 + i}", placement(i).site, placement(i).role,
                placement(i).region, f"aiorch-t-{host_name(i)}", "running")
        for i in range(1, hosts + 1)
    ]  # fmt: skip
    tree = render("t", lab_hosts, tmp_path / "key", tmp_path / "known_hosts")
    add_slurm_group(tree, [h.name for h in lab_hosts])
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def _hosts_of(inventory: Path, playbook: str) -> set[str]:
    argv = [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(PLAYBOOKS / playbook), "--list-hosts"]
    env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg")}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
    return {line.strip() for line in out.splitlines() if line.startswith("      ")}


def test_slurm_yml_runs_on_the_lab_group_and_site_yml_is_unchanged(tmp_path: Path) -> None:
    inventory = _lab_inventory(tmp_path)
    tree = yaml.safe_load(inventory.read_text())
    assert tree["all"]["children"][SLURM_GROUP] == {
        "hosts": {"dc1-1": None, "edge1-1": None},
        "vars": {"aiorch_slurm_cluster": "lab"},
    }
    assert _hosts_of(inventory, "slurm.yml") == {"dc1-1", "edge1-1"}
    assert _hosts_of(inventory, "site.yml") == {"dc1-1", "edge1-1", "edge2-1"}
    site = (PLAYBOOKS / "site.yml").read_text()
    assert "slurm" not in site


def test_a_one_host_lab_gets_a_one_node_group(tmp_path: Path) -> None:
    tree = yaml.safe_load(_lab_inventory(tmp_path, hosts=1).read_text())
    assert list(tree["all"]["children"][SLURM_GROUP]["hosts"]) == ["dc1-1"]
