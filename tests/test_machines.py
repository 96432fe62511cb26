"""Machines through the real hub and the `aiorch` CLI against a real Redfish BMC emulator
(sushy-tools fake, on loopback): enroll, inspect (PXE once and power on), one-line errors,
sealed credentials, the ramdisk's side of the contract, timeouts and the audit trail."""

from __future__ import annotations

import json

import httpx
import pytest

from aiorch.wait import wait_until
from tests.fixtures_hub import make_token
from tests.fixtures_machines import PASSWORD, boot_token, enroll, inventory, mac

pytestmark = pytest.mark.e2e
JSON = {"Content-Type": "application/json"}


def test_enroll_then_inspect_powers_on_and_sets_pxe_boot(shared_hub, emulator, creds):
    shown = enroll(shared_hub, emulator, creds, 1, "node1")
    assert shown["state"] == "enrolled"
    assert shown["simulated"] == "sushy-tools fake"
    assert PASSWORD not in json.dumps(shown) and "credentials" not in json.dumps(shown)
    shared_hub.cli("machines", "inspect", "node1")
    assert shared_hub.cli_json("machines", "show", "node1")["state"] == "inspecting"
    uuid = emulator.systems[0].uuid
    wait_until(lambda: emulator.system(uuid)["PowerState"] == "On", timeout=60, what="power on")
    assert emulator.system(uuid)["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    listed = shared_hub.cli_json("machines", "list", "--state", "inspecting")
    assert [m["name"] for m in listed] == ["node1"]


def test_bad_enrollments_are_one_line_errors_and_store_nothing(
    shared_hub, emulator, creds, tmp_path
):
    wrong = tmp_path / "wrong"
    wrong.write_text("admin:nope\n")
    url = emulator.system_url(emulator.systems[1].uuid)
    cases = [
        (["--bmc", url, "--mac", mac(2), "--credentials", str(wrong)], "refused the credentials"),
        (
            [
                "--bmc",
                "redfish+http://127.0.0.1:1/redfish/v1/Systems/x",
                "--mac",
                mac(2),
                "--credentials",
                str(creds),
            ],
            "unreachable",
        ),
        (["--bmc", url, "--mac", "not-a-mac", "--credentials", str(creds)], "not a MAC address"),
        (["--bmc", "http://h/x", "--mac", mac(2)], "redfish"),
        (["--bmc", url, "--mac", mac(1), "--credentials", str(creds)], "already belongs to"),
    ]
    for args, words in cases:
        result = shared_hub.cli("machines", "enroll", "bad", *args, check=False)
        assert result.returncode != 0, args
        assert words in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "nope" not in result.stderr
    assert "bad" not in [m["name"] for m in shared_hub.cli_json("machines", "list")]


def test_the_ramdisk_reports_inventory_then_burn_in_and_the_class_judges(
    shared_hub, emulator, creds, tmp_path
):
    strict = tmp_path / "strict.yaml"
    strict.write_text("burn_in: {cpu_seconds: 5, min_cpus: 64}\n")
    shared_hub.cli("machines", "class-set", "big", "-f", str(strict))
    enroll(shared_hub, emulator, creds, 3, "node3")
    enroll(shared_hub, emulator, creds, 4, "node4", "--class", "big")
    for i, name in ((3, "node3"), (4, "node4")):
        shared_hub.cli("machines", "inspect", name)
        token = boot_token(shared_hub, name)
        with shared_hub.client(token) as ramdisk:
            action = ramdisk.post("/ramdisk/inventory", json=inventory(i))
            assert action.status_code == 200, action.text
            assert action.json()["kind"] == "burn_in"
            measured = {"cpu_bogo_ops_per_s": 100.0, "smart": {"vda": "PASSED"}}
            done = ramdisk.post(
                "/ramdisk/result", json={"kind": "burn_in", "ok": True, "measured": measured}
            )
            assert done.json()["kind"] == "poweroff"
            # The step is over: its token opens nothing any more.
            again = ramdisk.post("/ramdisk/result", json={"kind": "burn_in", "ok": True})
            assert again.status_code == 401
    good = shared_hub.cli_json("machines", "show", "node3")
    assert good["state"] == "accepted" and good["inventory"]["system"]["serial"] == "S3"
    bad = shared_hub.cli_json("machines", "show", "node4")
    assert bad["state"] == "quarantined"
    assert "cpus: 1, want at least 64" in bad["reason"]
    refused = shared_hub.cli("machines", "accept", "node4", check=False)
    assert refused.returncode != 0 and "quarantined" in refused.stderr
    assert shared_hub.cli_json("machines", "accept", "node3")["state"] == "ready"
    events = [e["to_state"] for e in good["events"]]
    assert events == ["enrolled", "inspecting", "inspected", "burning_in", "accepted"]


def test_a_ramdisk_request_without_its_token_or_for_another_mac_is_refused(
    shared_hub, emulator, creds
):
    with shared_hub.client() as anonymous:
        assert anonymous.post("/ramdisk/inventory", json=inventory(1)).status_code == 401
        assert anonymous.post("/ramdisk/inventory", content=b"{", headers=JSON).status_code == 401
    with shared_hub.client(boot_token(shared_hub, "node1")) as ramdisk:
        other = ramdisk.post("/ramdisk/inventory", json=inventory(2))
        assert other.status_code == 403 and "node1" in other.json()["detail"]
        garbled = ramdisk.post("/ramdisk/inventory", json={"boot_mac": "x"})
        assert garbled.status_code == 422


def test_a_machine_that_never_reports_times_out_into_failed_inspecting(
    shared_hub, emulator, creds, tmp_path
):
    quick = tmp_path / "quick.yaml"
    quick.write_text("timeouts: {inspecting: 1}\n")
    shared_hub.cli("machines", "class-set", "quick", "-f", str(quick))
    enroll(shared_hub, emulator, creds, 5, "node5", "--class", "quick")
    shared_hub.cli("machines", "inspect", "node5")

    def failed() -> bool:
        return shared_hub.cli_json("machines", "show", "node5")["state"] == "failed_inspecting"

    wait_until(failed, timeout=60, what="the inspect timeout")
    shown = shared_hub.cli_json("machines", "show", "node5")
    assert "timed out in inspecting" in shown["reason"]
    with shared_hub.client(shared_hub.admin_token) as admin:
        entries = admin.get("/audit", params={"limit": 1000}).json()
    actions = {e["action"] for e in entries if e["target"] == "machine:node5"}
    assert {"machine.enroll", "machine.inspect", "machine.timeout"} <= actions


def test_power_and_a_viewer_cannot_act(shared_hub, emulator, creds):
    shown = shared_hub.cli_json("machines", "power", "node3", "off")
    assert shown["simulated"] == "sushy-tools fake"
    with shared_hub.client(shared_hub.admin_token) as admin:
        viewer = make_token(admin, "viewer")
    with shared_hub.client(viewer) as client:
        assert client.get("/machines").status_code == 200
        assert client.post("/machines/node3/power", json={"action": "on"}).status_code == 403
    with httpx.Client(verify=False) as bare:
        assert bare.get(f"{shared_hub.url}/api/v1/machines").status_code == 401
