"""A host that only a jump host reaches (a bastion): pre-flight and `aiorch provision` use it.

Two lab hosts; the lab firewall hides edge1-1 from this machine, so SSH from here times out
while dc1-1 still reaches it. The inventory sends Ansible through dc1-1 with
`-o ProxyJump=root@ADDRESS:22`, and an ssh_config (`-F`) tells ssh's jump process the lab's
key and known_hosts, as an operator's ~/.ssh/config would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiorch.lab import Lab
from tests.fixtures_hub import HubProcess
from tests.fixtures_lab import LabFactory

pytestmark = [pytest.mark.lab, pytest.mark.e2e]

PLAYBOOKS = Path(__file__).parent / "playbooks"
TARGET = "edge1-1"


def inventory_through(lab: Lab, bastion_config: Path, jump: str | None, path: Path) -> Path:
    """The lab's inventory with TARGET reached through `jump` (None: directly, as today)."""
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    target = inventory["all"]["children"]["edge1"]["hosts"][TARGET]
    if jump is not None:
        target["ansible_ssh_common_args"] += f" -F {bastion_config} -o ProxyJump={jump}"
    path.write_text(yaml.safe_dump(inventory))
    return path


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
    via_bastion = inventory_through(lab, config, f"root@{bastion.address}:22", tmp_path / "j.yml")
    direct = inventory_through(lab, config, None, tmp_path / "direct.yml")
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
    finally:
        lab.faults.unhide(TARGET)
        hub.stop()
