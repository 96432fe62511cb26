"""The lab's BMC-to-machine wire: sushy-emulator's notifier drives a machine's power once per
change, and a machine that went off by itself is told back without a second power-off."""

from __future__ import annotations

import uuid as uuidlib
from pathlib import Path

import httpx

from aiorch.lab.bmc_emulators import FakeSystem, SushyEmulator
from aiorch.lab.power_bridge import PowerBridge
from aiorch.wait import wait_until


def test_power_changes_reach_the_machine_once_each(tmp_path: Path) -> None:
    calls: list[tuple[str, bool]] = []
    system = FakeSystem(uuid=str(uuidlib.uuid4()), name="vm1", macs=["52:54:00:00:01:01"])
    with (
        PowerBridge(lambda uuid, on: calls.append((uuid, on))) as bridge,
        SushyEmulator(tmp_path, [system], notifier_url=bridge.url) as bmc,
    ):
        bmc.reset(system.uuid, "On")
        wait_until(lambda: calls == [(system.uuid, True)], timeout=30, what="power on notified")
        bmc.reset(system.uuid, "On")  # again: the record is re-sent, the machine left alone
        wait_until(lambda: bmc.system(system.uuid)["PowerState"] == "On", timeout=30, what="on")
        # The machine powered itself off; the lab tells the BMC, whose echo is no change.
        bridge.seen(system.uuid, False)
        bmc.reset(system.uuid, "ForceOff")
        wait_until(lambda: bmc.system(system.uuid)["PowerState"] == "Off", timeout=30, what="off")
        assert calls == [(system.uuid, True)]
        bmc.reset(system.uuid, "On")
        wait_until(lambda: len(calls) == 2, timeout=30, what="second power on")
        wait_until(lambda: bmc.system(system.uuid)["PowerState"] == "On", timeout=30, what="on")
        bmc.reset(system.uuid, "ForceOff")
        wait_until(lambda: len(calls) == 3, timeout=30, what="operator's power off")
    assert calls[1:] == [(system.uuid, True), (system.uuid, False)] and bridge.errors == []


def test_a_failing_machine_is_reported_and_the_bmc_still_answered(tmp_path: Path) -> None:
    def broken(uuid: str, on: bool) -> None:
        raise RuntimeError("qemu would not start")

    system = FakeSystem(uuid=str(uuidlib.uuid4()), name="vm2")
    with (
        PowerBridge(broken) as bridge,
        SushyEmulator(tmp_path, [system], notifier_url=bridge.url) as bmc,
    ):
        bmc.reset(system.uuid, "On")
        wait_until(lambda: bridge.errors, timeout=30, what="the failure reported")
        assert bridge.errors == [f"{system.uuid} On: qemu would not start"]
        wait_until(lambda: bmc.system(system.uuid)["PowerState"] == "On", timeout=30, what="on")


def test_a_reset_of_a_running_machine_is_off_then_on_once(tmp_path: Path) -> None:
    calls: list[bool] = []
    system = FakeSystem(uuid=str(uuidlib.uuid4()), name="vm3")
    with (
        PowerBridge(lambda uuid, on: calls.append(on)) as bridge,
        SushyEmulator(tmp_path, [system], notifier_url=bridge.url) as bmc,
    ):
        bmc.reset(system.uuid, "On")
        wait_until(lambda: bmc.system(system.uuid)["PowerState"] == "On", timeout=30, what="on")
        bmc.reset(system.uuid, "ForceRestart")
        # While the reset waits to apply, the record is sent again: no second restart.
        boot = {"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}}
        url = f"{bmc.base_url}/redfish/v1/Systems/{system.uuid}"
        httpx.patch(url, json=boot, auth=(bmc.username, bmc.password), timeout=5)
        assert calls == [True, False, True]
        wait_until(lambda: bmc.system(system.uuid)["PowerState"] == "On", timeout=30, what="on")
    assert calls == [True, False, True] and bridge.errors == []
