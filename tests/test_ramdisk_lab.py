"""The real ramdisk, booted for real: QEMU TCG (the machine; its BMC is the sushy-tools fake,
simulated) runs the kernel and initrd built from Debian's debs, and its init talks TLS to a
real hub: inventory, burn-in (stress-ng, fio, smartctl on the emulated disks), the class's
verdict, then a release whose wipe this test checks on the disk files themselves.

The VM is booted here from the machine's boot token (read as the hub's boot script will);
PXE and the BMC-to-VM bridge come with the boot service.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiorch.lab.bmc_emulators import FakeSystem, SushyEmulator
from aiorch.lab.metal import DISK_NAMES, MIB
from aiorch.metal.contract import ActionResult, Inventory
from aiorch.metal.ramdisk import RamdiskFiles, with_ca
from tests.fixtures_hub import HubProcess
from tests.fixtures_machines import PASSWORD, boot_token  # and its `creds` fixture
from tests.fixtures_ramdisk import HUB_IP, Vm, VmRun, cached_ramdisk, vm_disks

pytestmark = pytest.mark.lab
SHORT = "burn_in: {cpu_seconds: 3, disk_seconds: 2, disk_size_mib: 16}\n"
STRICT = "burn_in: {cpu_seconds: 3, disk_seconds: 2, disk_size_mib: 16, min_cpus: 64}\n"
PATTERN = b"\xa5" * MIB


def mac(i: int) -> str:
    return f"52:54:00:aa:00:{i:02x}"


@pytest.fixture(scope="module")
def ramdisk() -> RamdiskFiles:
    return cached_ramdisk()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SushyEmulator]:
    systems = [FakeSystem(uuid=str(uuidlib.uuid4()), name=f"vm{i}", macs=[mac(i)]) for i in (1, 2)]
    with SushyEmulator(tmp_path_factory.mktemp("sushy"), systems, password=PASSWORD) as bmc:
        yield bmc


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """A real hub whose certificate covers the address the VM dials (slirp's relay)."""
    work = tmp_path_factory.mktemp("ramdisk-hub")
    process = HubProcess(work / "hub", serve_args=["--tls-name", HUB_IP]).start()
    for name, text in (("lab-short", SHORT), ("lab-strict", STRICT)):
        (work / f"{name}.yaml").write_text(text)
        process.cli("machines", "class-set", name, "-f", str(work / f"{name}.yaml"))
    yield process
    process.stop()


def enroll(hub: HubProcess, emulator: SushyEmulator, creds: Path, i: int, cls: str) -> str:
    name = f"vm{i}"
    url = emulator.system_url(emulator.systems[i - 1].uuid)
    hub.cli("machines", "enroll", name, "--bmc", url, "--mac", mac(i),
            "--credentials", str(creds), "--class", cls)  # fmt: skip
    return name


def boot(
    hub: HubProcess,
    ramdisk: RamdiskFiles,
    name: str,
    i: int,
    work: Path,
    disks: list[Path],
    *,
    token: str | None = None,
    relay_port: int | None = None,
    while_up: Callable[[Vm], None] | None = None,
) -> VmRun:
    """Boot machine `name`'s VM on its boot token (or `token`) until it powers off."""
    token = token or boot_token(hub, name)
    ca = with_ca(ramdisk, hub.ca_path.read_bytes(), work)
    vm = Vm(ramdisk, ca, work / name, hub_port=hub.port, token=token, mac=mac(i),
            serial=f"SER-{name}", disks=disks, relay_port=relay_port)  # fmt: skip
    try:
        if while_up is not None:
            while_up(vm)
        run = vm.wait()
    finally:
        vm.kill()
    assert run.rc == 0, run.console[-4000:]
    # The token never shows: not on QEMU's command line, not on the console.
    assert token not in run.argv and token not in run.console
    return run


def show(hub: HubProcess, name: str) -> dict[str, Any]:
    return dict(hub.cli_json("machines", "show", name))


def phase(timings: dict[str, float], what: str, run: VmRun, console: str) -> None:
    timings[what] = round(run.seconds, 1)
    print(f"\n--- {what}: {run.seconds:.1f} s ---\n{console[-1500:]}")


def test_inventory_burn_in_accept_then_release_wipes_every_disk(
    hub, emulator, creds, ramdisk, tmp_path
):
    timings: dict[str, float] = {}
    name = enroll(hub, emulator, creds, 1, "lab-short")
    disks = vm_disks(tmp_path)
    hub.cli("machines", "inspect", name)
    run = boot(hub, ramdisk, name, 1, tmp_path, disks)
    phase(timings, "inspect + burn-in", run, run.console)
    machine = show(hub, name)
    assert machine["state"] == "accepted", (machine.get("reason"), run.console[-3000:])
    inventory = Inventory.model_validate(machine["inventory"])
    assert inventory.system.serial == f"SER-{name}"
    assert inventory.boot_mac == mac(1) and mac(1) in [n.mac for n in inventory.nics]
    serials = {disk: f"SER-{name}-D{i}" for i, disk in enumerate(DISK_NAMES)}
    sizes = {d.name: (d.size_bytes, d.serial) for d in inventory.disks}
    assert sizes == {disk: (64 * MIB, serial) for disk, serial in serials.items()}
    assert inventory.cpus == 1 and inventory.memory_bytes > 512 * MIB
    assert any(p.vendor == "0x1af4" for p in inventory.pci)  # virtio, by vendor id
    measured = machine["burn_in"]["measured"]
    ActionResult.model_validate({"kind": "burn_in", "ok": True, "measured": measured})
    assert measured["cpu_bogo_ops_per_s"] > 0
    for key in ("disk_write_mib_s", "disk_read_mib_s"):
        assert set(measured[key]) == set(DISK_NAMES) and min(measured[key].values()) > 0
    # virtio has no SMART; QEMU's NVMe and ATA disks answer a health check.
    assert measured["smart"] == {"vda": "unsupported", "nvme0n1": "PASSED", "sda": "PASSED"}

    hub.cli("machines", "accept", name)
    for disk in disks:  # something on the disks for the wipe to remove
        with disk.open("r+b") as f:
            f.write(PATTERN)
            f.seek(-MIB, 2)
            f.write(PATTERN)
    hub.cli("machines", "release", name)
    run = boot(hub, ramdisk, name, 1, tmp_path / "release", disks)
    phase(timings, "release (metadata wipe)", run, run.console)
    machine = show(hub, name)
    assert machine["state"] == "ready", (machine.get("reason"), run.console[-3000:])
    outcome = {d["name"]: d for d in machine["wipe"]["disks"]}
    assert set(outcome) == set(DISK_NAMES)
    for disk_name, serial in serials.items():
        assert outcome[disk_name]["ok"] and outcome[disk_name]["method"] == "metadata"
        assert outcome[disk_name]["serial"] == serial
    for disk in disks:
        with disk.open("rb") as f:
            first = f.read(MIB)
            f.seek(-MIB, 2)
            last = f.read(MIB)
        assert first == bytes(MIB) and last == bytes(MIB), disk

    # A secure wipe: NVMe formats with secure erase; virtio has none, so the release fails
    # with that disk's reason, and both outcomes are recorded.
    hub.cli("machines", "release", name, "--wipe", "secure")
    run = boot(hub, ramdisk, name, 1, tmp_path / "secure", disks)
    phase(timings, "release (secure wipe)", run, run.console)
    machine = show(hub, name)
    assert machine["state"] == "failed_releasing" and "wipe failed" in machine["reason"]
    outcome = {d["name"]: d for d in machine["wipe"]["disks"]}
    assert outcome["vda"]["ok"] is False and outcome["vda"]["method"] == "none"
    assert "no secure erase for this kind of disk" in outcome["vda"]["detail"]
    assert outcome["nvme0n1"]["method"] == "nvme-format-ses1"
    assert outcome["sda"]["method"] == "ata-security-erase" and outcome["sda"]["ok"] is False
    print(f"secure wipe outcome: {outcome}")
    print(f"\nphase timings (s): {timings}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_machine_below_its_class_is_quarantined_and_its_dead_token_powers_it_off(
    hub, emulator, creds, ramdisk, tmp_path
):
    name = enroll(hub, emulator, creds, 2, "lab-strict")
    hub.cli("machines", "inspect", name)
    token = boot_token(hub, name)
    late = free_port()  # the hub is unreachable until a relay listens here
    relays: list[subprocess.Popen[bytes]] = []

    def hub_comes_back(vm: Vm) -> None:
        vm.wait_console("hub unreachable for /ramdisk/inventory")
        listen = f"TCP-LISTEN:{late},bind=127.0.0.1,reuseaddr,fork"
        relays.append(subprocess.Popen(["socat", listen, f"TCP:127.0.0.1:{hub.port}"]))

    disks = vm_disks(tmp_path, 32)
    try:
        run = boot(hub, ramdisk, name, 2, tmp_path, disks, token=token, relay_port=late,
                   while_up=hub_comes_back)  # fmt: skip
    finally:
        for relay in relays:
            relay.kill()
            relay.wait()
    phase({}, "inspect + burn-in (strict class, hub late)", run, run.console)
    assert "retrying in" in run.console
    machine = show(hub, name)
    assert machine["state"] == "quarantined"
    assert "cpus: 1, want at least 64" in machine["reason"]
    assert machine["burn_in"]["measured"]["cpu_bogo_ops_per_s"] > 0
    assert machine["burn_in"]["problems"] == ["cpus: 1, want at least 64"]

    # The step is over: the same token now gets a 401, which the ramdisk prints and obeys.
    started = time.monotonic()
    run = boot(hub, ramdisk, name, 2, tmp_path / "again", disks, token=token)
    phase({}, "boot on a dead token", run, run.console)
    assert "refused /ramdisk/inventory (HTTP 401)" in run.console
    assert "no longer" in run.console and "powering off" in run.console
    assert show(hub, name)["state"] == "quarantined"
    print(f"dead-token cycle: {time.monotonic() - started:.1f} s")
