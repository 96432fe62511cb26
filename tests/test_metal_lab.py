"""Bare metal for real in the lab: QEMU TCG machines on the lab network, powered by their
(simulated) Redfish BMC, network-booted through dnsmasq's proxy-DHCP and the hub's boot
listener, driven with the `aiorch machines` CLI."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from aiorch.lab.metal import MIB, MetalLab
from aiorch.metal.contract import Inventory
from aiorch.metal.image_record import ImageManifest
from aiorch.wait import wait_until
from tests.fixtures_metal import DISK_MIB, SITE, MetalHub

CYCLE_LINE = "lab machine cycle:"


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


SHORT = "burn_in: {cpu_seconds: 3, disk_seconds: 2, disk_size_mib: 16}\n"
STRICT = SHORT.replace("}", ", min_cpus: 64}")
PATTERN = b"\xa5" * MIB
IMAGE = "aiorch-root"  # the image's name in the hub's image directory (aiorch repo image)


def _wait_state(hub: MetalHub, name: str, want: str, timeout: float) -> dict[str, Any]:
    def there() -> bool:
        shown = hub.show(name)
        if str(shown["state"]).startswith("failed_"):
            reason = str(shown.get("reason"))
            run = re.search(r"\brun (r[0-9a-f]{12})\b", reason)
            logs = hub.cli("runs", "logs", run.group(1), check=False).stdout if run else ""
            raise AssertionError(f"{name} failed: {reason}\n{logs[-4000:]}")
        return shown["state"] == want

    wait_until(there, timeout=timeout, what=f"{name} {want}")
    return hub.show(name)


def test_pxe_inspect_burn_in_accept_provision_boot_disk_enroll_configure_serving_retire_ready(
    metal_hub: MetalHub, metal: MetalLab, metal_ramdisk: Path, metal_image: ImageManifest
) -> None:
    """The issue's cycle through the CLI: the BMC powers the VM on, iPXE gets the hub's script
    over proxy-DHCP, the ramdisk posts inventory and burns in; provisioning writes the root
    image, the VM boots it from its disk and its agent enrolls, the configure run makes it
    serving; retiring its host then drains it, wipes its disks and makes it ready again."""
    timings: dict[str, float] = {}
    metal_hub.class_set("lab-short", SHORT)
    metal_hub.enroll(metal, "pxe1", "lab-short")
    vm = metal.machine("pxe1")
    started = time.monotonic()
    metal_hub.cli("machines", "inspect", "pxe1")
    machine = _wait_state(metal_hub, "pxe1", "accepted", timeout=400)
    timings["inspect + burn-in"] = time.monotonic() - started
    console = vm.console_text()
    inventory = Inventory.model_validate(machine["inventory"])
    assert inventory.system.serial == vm.serial and inventory.boot_mac == vm.mac, console[-3000:]
    sizes = {d.name: (d.size_bytes, d.serial) for d in inventory.disks}
    disk = DISK_MIB["pxe1"] * MIB
    assert sizes == {"vda": (disk, f"{vm.serial}-D0"), "nvme0n1": (disk, f"{vm.serial}-D1")}
    assert machine["burn_in"]["measured"]["cpu_bogo_ops_per_s"] > 0
    assert machine["simulated"] == "sushy-tools fake"  # the BMC; the machine is a QEMU VM
    wait_until(lambda: metal.powered_off("pxe1"), timeout=60, what="the ramdisk's power-off")

    metal_hub.cli("machines", "accept", "pxe1")
    started = time.monotonic()
    # vda: the disk the VM's BIOS boots first (SeaBIOS, -boot order=nc)
    metal_hub.cli("machines", "provision", "pxe1", "--image", IMAGE, "--site", SITE,
                  "--root-disk", "vda")  # fmt: skip
    machine = _wait_state(metal_hub, "pxe1", "provisioned", timeout=600)
    timings["provision (image written)"] = time.monotonic() - started
    deploy = machine["image"]["deploy"]
    assert deploy["ok"] and deploy["measured"]["sha256"] == metal_image.sha256, deploy
    assert deploy["measured"]["bytes_written"] == metal_image.raw_size_bytes
    with vm.disks[0].open("rb") as f:  # the image's backup GPT, moved to the disk's last sector
        f.seek(-512, 2)
        assert f.read(8) == b"EFI PART"
    started = time.monotonic()
    machine = _wait_state(metal_hub, "pxe1", "configuring", timeout=600)
    timings["boot from disk + agent enrolled"] = time.monotonic() - started
    assert machine["host"] == "pxe1" and vm.is_on
    host = metal_hub.cli_json("hosts", "show", "pxe1")
    assert host["site"] == SITE and host["vars"]["ansible_user"] == "root"
    started = time.monotonic()
    machine = _wait_state(metal_hub, "pxe1", "serving", timeout=1500)
    timings["site.yml"] = time.monotonic() - started

    agent = metal_hub.cli_json("hosts", "show", "pxe1")
    assert agent["status"] != "retired" and agent["agent_id"], agent

    # Retired: drained, reset by the BMC into the ramdisk, wiped, ready for its next use.
    started = time.monotonic()
    metal_hub.cli("hosts", "retire", "pxe1")
    machine = _wait_state(metal_hub, "pxe1", "ready", timeout=600)
    timings["retire (drain, wipe)"] = time.monotonic() - started
    assert {d["name"]: d["ok"] for d in machine["wipe"]["disks"]} == {"vda": True, "nvme0n1": True}
    wait_until(lambda: metal.powered_off("pxe1"), timeout=60, what="the ramdisk's power-off")
    with vm.disks[0].open("rb") as disk:  # the image's boot sector and both GPTs: gone
        assert disk.read(MIB) == bytes(MIB)
        disk.seek(-MIB, 2)
        assert disk.read(MIB) == bytes(MIB)
    # One JSON line, which benchmarks/bench_vm_cycle.py reads.
    print(f"\n{CYCLE_LINE} " + json.dumps({"steps_s": timings, "vm_boots": vm.boots}))


def test_a_machine_below_its_class_ends_quarantined_with_its_numbers(
    metal_hub: MetalHub, metal: MetalLab, metal_ramdisk: Path
) -> None:
    """pxe2 boots by UEFI (OVMF): iPXE's EFI build, the ramdisk's kernel by its EFI stub."""
    assert metal.machine("pxe2").uefi
    metal_hub.class_set("lab-strict", STRICT)
    metal_hub.enroll(metal, "pxe2", "lab-strict")
    metal_hub.cli("machines", "inspect", "pxe2")
    machine = _wait_state(metal_hub, "pxe2", "quarantined", timeout=400)
    assert "cpus: 1, want at least 64" in machine["reason"]
    assert machine["burn_in"]["measured"]["cpu_bogo_ops_per_s"] > 0
    forced = metal_hub.cli("machines", "accept", "pxe2", check=False)
    assert forced.returncode != 0 and "--force" in forced.stderr
    wait_until(lambda: metal.powered_off("pxe2"), timeout=60, what="the ramdisk's power-off")

    # Taken anyway, then released: the ramdisk wipes both disks, checked on the disk files.
    metal_hub.cli("machines", "accept", "pxe2", "--force")
    vm = metal.machine("pxe2")
    for path in vm.disks:  # something for the wipe to remove, at both ends
        with path.open("r+b") as f:
            f.write(PATTERN)
            f.seek(-MIB, 2)
            f.write(PATTERN)
    started = time.monotonic()
    metal_hub.cli("machines", "release", "pxe2")
    machine = _wait_state(metal_hub, "pxe2", "ready", timeout=300)
    took = time.monotonic() - started
    outcome = {d["name"]: d for d in machine["wipe"]["disks"]}
    assert {n: (d["ok"], d["method"], d["serial"]) for n, d in outcome.items()} == {
        "vda": (True, "metadata", f"{vm.serial}-D0"),
        "nvme0n1": (True, "metadata", f"{vm.serial}-D1"),
    }
    wait_until(lambda: metal.powered_off("pxe2"), timeout=60, what="off after the wipe")
    for path in vm.disks:
        with path.open("rb") as f:
            first = f.read(MIB)
            f.seek(-MIB, 2)
            last = f.read(MIB)
        assert first == bytes(MIB) and last == bytes(MIB), path
    print(f"\nrelease (metadata wipe) to ready: {took:.1f} s")
