"""A machine with no BMC (agent://HOST) through the real hub and the CLI: its host's agent is
the way in. `machines inspect` puts a reboot to PXE in the agent's desired state, the agent's
own code acts on it against simulated UEFI firmware (tests/fixtures_power.py), its report
takes the request out again, and the ramdisk's last step is a reboot into the disk's OS
(nothing could power the machine on again). The agent's side is played over the protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.power import PowerControl
from tests.fixtures_hub import HubProcess, checkin_body, enroll_agent, make_enroll_token
from tests.fixtures_machines import boot_token, inventory, mac
from tests.fixtures_power import Firmware

pytestmark = pytest.mark.e2e


def checkin(agent: httpx.Client, agent_id: str, power: dict[str, Any] | None = None) -> Any:
    body = checkin_body()
    if power is not None:
        body["report"] = {"revision": 0, "workloads": {}, "power": power}
    answer = agent.post(f"/agents/{agent_id}/checkin", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["desired"]


def box(hub: HubProcess, admin: httpx.Client, i: int) -> tuple[dict[str, Any], str]:
    """Host edge-boxI with an online agent, and machine boxI enrolled with agent://edge-boxI;
    returns the agent's enrollment (its `credential` for `hub.client`) and id."""
    enrolled = enroll_agent(hub, make_enroll_token(admin), f"edge-box{i}")
    with hub.client(enrolled["credential"]) as agent:
        checkin(agent, enrolled["agent_id"])
    machine = hub.cli_json(
        "machines", "enroll", f"box{i}", "--bmc", f"agent://edge-box{i}", "--mac", mac(i)
    )
    assert machine["state"] == "enrolled" and machine["simulated"] is None
    return enrolled, enrolled["agent_id"]


def inspect_acted_on(
    hub: HubProcess, agent: httpx.Client, agent_id: str, name: str, firmware: Firmware, state: Path
) -> tuple[dict[str, Any], PowerControl]:
    """`machines inspect NAME`, then the agent's next check-in acted on by its own code."""
    hub.cli("machines", "inspect", name)
    desired = checkin(agent, agent_id)
    control = PowerControl(state, run=firmware)
    control.apply(desired)
    return desired, control


def test_inspect_without_a_bmc_is_a_reboot_to_pxe_by_the_machines_agent(
    shared_hub: HubProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    enrolled, agent_id = box(shared_hub, admin, 7)
    with shared_hub.client(enrolled["credential"]) as agent:
        firmware = Firmware()
        desired, control = inspect_acted_on(shared_hub, agent, agent_id, "box7", firmware, tmp_path)
        request = desired["power"]
        assert (request["action"], request["boot_next"], request["mac"]) == (
            "reboot",
            "pxe",
            mac(7),
        )
        assert firmware.commands[1:] == [
            ["efibootmgr", "--bootnext", "0002"],
            ["systemctl", "reboot"],
        ]
        # After the reboot: the outcome is reported, and the request leaves the desired state.
        assert "power" not in checkin(agent, agent_id, control.report())
    audit = admin.get("/audit", params={"action": "agent.power.done"}).json()
    assert any(e["target"] == "host:edge-box7" for e in audit), audit

    with shared_hub.client(boot_token(shared_hub, "box7")) as ramdisk:
        assert ramdisk.post("/ramdisk/inventory", json=inventory(7)).json()["kind"] == "burn_in"
        measured = {"cpu_bogo_ops_per_s": 100.0, "smart": {"vda": "PASSED"}}
        done = ramdisk.post(
            "/ramdisk/result", json={"kind": "burn_in", "ok": True, "measured": measured}
        )
    assert done.json()["kind"] == "reboot"  # back into its own OS: no BMC would power it on
    assert shared_hub.cli_json("machines", "show", "box7")["state"] == "accepted"


def test_the_agent_saying_it_cannot_fails_the_step_at_once_with_its_reason(
    shared_hub: HubProcess, admin: httpx.Client, tmp_path: Path
) -> None:
    enrolled, agent_id = box(shared_hub, admin, 8)
    with shared_hub.client(enrolled["credential"]) as agent:
        firmware = Firmware(listing="BootOrder: 0001\nBoot0001* debian\tHD(1)\n")
        _, control = inspect_acted_on(shared_hub, agent, agent_id, "box8", firmware, tmp_path)
        assert ["systemctl", "reboot"] not in firmware.commands
        checkin(agent, agent_id, control.report())
    machine = shared_hub.cli_json("machines", "show", "box8")
    assert machine["state"] == "failed_inspecting"
    assert machine["reason"] == "agent: the firmware lists no network boot entry (efibootmgr -v)"

    # power cycle: a plain reboot, the firmware's own order; a stale or forged answer is ignored
    with shared_hub.client(enrolled["credential"]) as agent:
        shared_hub.cli("machines", "power", "box8", "cycle")
        request = checkin(agent, agent_id)["power"]
        assert request["action"] == "reboot" and "boot_next" not in request
        stale = {"id": "0123456789abcdef", "ok": True, "message": "done", "at": 1.0}
        assert checkin(agent, agent_id, stale)["power"] == request


@pytest.mark.parametrize(
    ("bmc", "words"),
    [
        ("agent://no-such-host", "there is no host no-such-host in the inventory"),
        ("agent://box-host:22", "must be agent://HOST"),
    ],
)
def test_a_bad_agent_address_is_a_one_line_error(
    shared_hub: HubProcess, bmc: str, words: str
) -> None:
    result = shared_hub.cli("machines", "enroll", "bad", "--bmc", bmc, "--mac", mac(9), check=False)
    assert result.returncode != 0 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_power_cannot_be_written_into_a_desired_state_by_hand(
    shared_hub: HubProcess, admin: httpx.Client
) -> None:
    enrolled = enroll_agent(shared_hub, make_enroll_token(admin), "edge-box9")
    document = {"workloads": [], "power": {"id": "0123456789abcdef", "action": "poweroff"}}
    put = admin.put(f"/agents/{enrolled['agent_id']}/desired", json={"document": document})
    assert put.status_code == 422 and "document.power" in put.json()["detail"], put.text
