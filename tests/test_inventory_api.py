"""Inventory through the hub: import with the CLI, export, and plain Ansible agrees."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.fixtures_hub import BIN, HubProcess
from tests.test_inventory import alias_bomb

EXAMPLE = Path(__file__).parent.parent / "inventories" / "example"


def _ansible_list(path: Path) -> dict:
    out = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    data = json.loads(out)
    for group in data.values():
        for key in ("hosts", "children"):
            if key in group:
                group[key] = sorted(group[key])
    return data


def test_import_export_round_trip_matches_ansible(hub: HubProcess, tmp_path: Path):
    summary = hub.cli_json("inventory", "import", str(EXAMPLE / "hosts.yml"))
    assert summary["hosts"] == 8
    exported = tmp_path / "exported.yml"
    hub.cli("inventory", "export", "--out", str(exported))
    assert _ansible_list(exported) == _ansible_list(EXAMPLE / "hosts.yml")


def test_imported_hosts_carry_site_role_and_labels(hub: HubProcess):
    hub.cli("inventory", "import", str(EXAMPLE / "hosts.ini"))
    hosts = {h["name"]: h for h in hub.cli_json("hosts", "list")}
    h100 = hosts["dc1-h100-01"]
    assert (h100["site"], h100["region"]) == ("dc1", "eu")
    assert h100["labels"]["site"] == "dc1"
    assert {s["name"]: s["region"] for s in hub.cli_json("sites")} == {
        "dc1": "eu",
        "edge1": "eu",
        "edge2": "us",
    }


def test_failed_import_changes_nothing(hub: HubProcess, tmp_path: Path):
    hub.cli("inventory", "import", str(EXAMPLE / "hosts.yml"))
    before = hub.cli("inventory", "export").stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts:\n    ok-host:\n      aiorch_labels: {gpu: [1, 2]}\n")
    result = hub.cli("inventory", "import", str(bad), check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "aiorch_labels.gpu" in result.stderr
    assert hub.cli("inventory", "export").stdout == before


def test_malformed_inventory_is_422_naming_the_problem(hub: HubProcess):
    with hub.client(hub.admin_token) as admin:
        response = admin.post(
            "/inventory/import", json={"filename": "x.ini", "content": "[g\nhost ansible_host"}
        )
    assert response.status_code == 422
    assert "x.ini" in response.json()["detail"] or "INI" in response.json()["detail"]


def test_unknown_host_is_404(hub: HubProcess):
    with hub.client(hub.admin_token) as admin:
        response = admin.get("/hosts/no-such-host")
    assert response.status_code == 404 and "no-such-host" in response.json()["detail"]


def test_import_is_audited(hub: HubProcess):
    hub.cli("inventory", "import", str(EXAMPLE / "hosts.yml"))
    with hub.client(hub.admin_token) as admin:
        entries = admin.get("/audit", params={"action": "inventory.import"}).json()
    assert entries[0]["actor"].startswith("user:") and entries[0]["detail"]["hosts"] == 8


def test_alias_bomb_import_is_a_one_line_cli_error_and_the_hub_serves_on(
    hub: HubProcess, tmp_path: Path
):
    bomb = tmp_path / "bomb.yml"
    bomb.write_text(alias_bomb())
    started = time.monotonic()
    result = hub.cli("inventory", "import", str(bomb), check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "YAML aliases" in result.stderr
    assert time.monotonic() - started < 30
    with hub.client(hub.admin_token) as admin:
        assert admin.get("/hosts").json() == []
