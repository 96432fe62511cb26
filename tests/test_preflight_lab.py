"""A host that only a jump host reaches (a bastion): pre-flight and `aiorch provision` use it.

Two lab hosts; the lab firewall hides edge1-1 from this machine, so SSH from here times out
while dc1-1 still reaches it. The inventory sends Ansible through dc1-1 with
`-o ProxyJump=root@ADDRESS:22`, and an ssh_config (`-F`) tells ssh's jump process the lab's
key and known_hosts, as an operator's ~/.ssh/config would.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiorch.hub.services import preflight
from aiorch.lab import Lab
from tests.fixtures_hub import HubProcess
from tests.fixtures_lab import LabFactory

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

PLAYBOOKS = Path(__file__).parent / "playbooks"
TARGET = "edge1-1"


def inventory_with(lab: Lab, target_args: str, path: Path) -> Path:
    """The lab's inventory with `target_args` added to TARGET's ansible_ssh_common_args."""
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    inventory["all"]["children"]["edge1"]["hosts"][TARGET]["ansible_ssh_common_args"] += (
        f" {target_args}"
    )
    path.write_text(yaml.safe_dump(inventory))
    return path


def target_vars(inventory: Path, **changes: object) -> dict[str, Any]:
    hostvars = yaml.safe_load(inventory.read_text())["all"]["children"]["edge1"]["hosts"][TARGET]
    return {**hostvars, **changes}


def provision(hub: HubProcess, inventory: Path, label: str) -> tuple[int, dict[str, Any]]:
    hub.cli("inventory", "import", str(inventory))
    args = ["write_file.yml", "--limit", TARGET, "-e", "api_token=x", "-e", f"run_label={label}"]
    result = hub.cli("provision", *args, "--output", "json", check=False)
    return result.returncode, json.loads(result.stdout)


def test_host_behind_a_jump_host_passes_preflight_and_provisions_through_it(
    lab_factory: LabFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    lab = lab_factory(hosts=2)
    bastion, target = lab.host("dc1-1"), lab.host(TARGET)
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host {bastion.address}\n"
        f"  IdentityFile {lab.ssh_key_path}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {lab.known_hosts_path}\n"
        "  StrictHostKeyChecking yes\n"
    )
    jump = f"root@{bastion.address}:22"
    via_bastion = inventory_with(lab, f"-F {config} -o ProxyJump={jump}", tmp_path / "jump.yml")
    direct = inventory_with(lab, "", tmp_path / "direct.yml")
    monkeypatch.setenv("AIORCH_PLAYBOOKS_DIR", str(PLAYBOOKS))
    hub = HubProcess(tmp_path / "hub").start()
    lab.faults.hide(TARGET)
    try:
        code, run = provision(hub, via_bastion, "through-the-bastion")
        assert (code, run["status"], run["preflight"]) == (0, "successful", {}), run
        assert run["recap"][TARGET]["failed"] == 0 and run["recap"][TARGET]["changed"] == 2
        marker = lab.exec(TARGET, ["cat", "/tmp/aiorch-test-marker"]).stdout
        assert marker == "written by run through-the-bastion\n"

        code, run = provision(hub, direct, "direct")
        assert code == 2 and run["status"] == "failed" and run["recap"] == {}
        assert run["preflight"] == {TARGET: f"{TARGET}: no answer within 5 s ({target.address}:22)"}

        closed_port = target_vars(via_bastion, ansible_port=2222)
        assert preflight.check({TARGET: closed_port}, timeout=5) == {
            TARGET: f"{TARGET}: jump host {jump} cannot connect to {target.address}:2222: "
            "Connect failed"
        }
        unknown_bastion = target_vars(
            inventory_with(lab, f"-F none -o ProxyJump={jump}", tmp_path / "no-config.yml")
        )
        problem = preflight.check({TARGET: unknown_bastion}, timeout=5)[TARGET]
        assert problem.startswith(f"{TARGET}: via jump host {jump} ({bastion.address}:22): ")
        # This machine's own ssh files do not vouch for the bastion (nor hold the lab's key).
        assert re.search(r"host key (not known|does not match)|authentication failed", problem)
    finally:
        lab.faults.unhide(TARGET)
        hub.stop()
