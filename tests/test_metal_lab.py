"""Bare metal for real in the lab: QEMU TCG machines on the lab network, powered by their
(simulated) Redfish BMC, network-booted through dnsmasq's proxy-DHCP and the hub's boot
listener, driven with the `aiorch machines` CLI."""

from __future__ import annotations

import time

from aiorch.lab.metal import MetalLab
from aiorch.wait import wait_until
from tests.fixtures_metal import MetalHub


def test_a_machine_that_never_network_boots_times_out_into_failed_inspecting(
    metal_hub: MetalHub, metal: MetalLab
) -> None:
    metal_hub.class_set("lab-quick", "timeouts: {inspecting: 45}\n")
    metal_hub.enroll(metal, "dark", "lab-quick")
    started = time.monotonic()
    metal_hub.cli("machines", "inspect", "dark")
    vm = metal.machine("dark")
    wait_until(lambda: vm.is_on, timeout=60, what="the BMC powering the VM on")

    def failed() -> bool:
        return str(metal_hub.show("dark")["state"]) == "failed_inspecting"

    wait_until(failed, timeout=120, what="the inspect timeout")
    took = time.monotonic() - started
    shown = metal_hub.show("dark")
    assert "timed out in inspecting" in shown["reason"], shown
    wait_until(lambda: not vm.is_on, timeout=60, what="the hub powering the VM off")
    assert vm.boots == 1
    assert "PXE-booted" not in metal_hub.log.read_text()  # it never asked the boot listener
    print(f"\nnever-PXE machine failed after {took:.1f} s (class timeout 45 s)")
