"""Bare metal in the lab: QEMU TCG machines on a lab network, network-booted for real.

Each machine is a VM whose NIC is a tap on the lab's bridge, with virtio and NVMe disks
(raw files) and an SMBIOS serial; QEMU's NIC ROM is Debian's iPXE. On that bridge run the
"site" DHCP (a dnsmasq handing out leases, as a site's own server would) and aiorch's
proxy-DHCP and TFTP (aiorch/metal/bootnet.py), which point iPXE at the hub's boot listener.
The machines' BMC is sushy-emulator's fake driver (simulated); its notifier powers the VMs
through the power bridge, and a VM that powers itself off is told back to the BMC.

Machine = QEMU TCG VM (no KVM here); values such as serials are synthetic.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute

from aiorch.errors import UserError
from aiorch.lab.bmc_emulators import FakeSystem, SushyEmulator
from aiorch.lab.power_bridge import PowerBridge
from aiorch.metal.bootnet import BootNet, run_dnsmasq

log = logging.getLogger("aiorch.lab.metal")
MIB = 1 << 20
# Leases the site DHCP hands out, as offsets into the lab subnet (lab hosts sit low).
LEASE_FIRST, LEASE_LAST = 200, 239


# How a lab machine's disks attach, in order, and the names the ramdisk's kernel gives them.
_DISK_DEVICES = (
    ("virtio-blk-pci,drive=d{i}", "vda"),
    ("nvme,drive=d{i}", "nvme0n1"),
    ("ide-hd,drive=d{i},bus=ahci.0", "sda"),  # SATA, on the AHCI controller added for it
)
DISK_NAMES = tuple(name for _, name in _DISK_DEVICES)
# UEFI firmware for a lab machine: Debian's OVMF (package ovmf), its code read-only and a
# copy of its empty variable store per machine (the machine's NVRAM: boot entries, BootNext).
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


def raw_disks(workdir: Path, count: int, size_mib: int) -> list[Path]:
    """`count` raw disk files (made sparse where missing), in attachment order."""
    workdir.mkdir(parents=True, exist_ok=True)
    paths = [workdir / f"disk{i}.raw" for i in range(count)]
    for path in paths:
        if not path.exists():
            with path.open("wb") as f:
                f.truncate(size_mib * MIB)
    return paths


def qemu_argv(
    serial: str,
    disks: list[Path],
    console: Path,
    memory_mib: int = 1024,
    reboots: bool = False,
    nvram: Path | None = None,
) -> list[str]:
    """A lab machine without its network: QEMU TCG, one vCPU, the console on a file, an SMBIOS
    serial, and `disks` attached as virtio, NVMe and SATA (serials SERIAL-D0, -D1, ...). A
    guest's reboot ends QEMU unless `reboots` (a server rebooting stays on, and boots again).
    With `nvram` the machine boots UEFI (OVMF) with that file as its variable store, and its
    first disk is boot option 2 (the network, where it has one, is 1); else BIOS (SeaBIOS)."""
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory_mib), "-smp", "1",
            "-display", "none", "-monitor", "none", "-serial", f"file:{console}",
            "-smbios", f"type=1,manufacturer=aiorch-lab,product=qemu-tcg,serial={serial}",
    ]  # fmt: skip
    if nvram is not None:
        argv += _uefi(nvram)
    if not reboots:
        argv.append("-no-reboot")
    if len(disks) > len(_DISK_DEVICES):
        raise UserError(f"a lab machine takes at most {len(_DISK_DEVICES)} disks")
    if len(disks) > 2:
        argv += ["-device", "ahci,id=ahci"]
    for i, disk in enumerate(disks):
        device = _DISK_DEVICES[i][0].format(i=i)
        if nvram is not None and i == 0:
            device += ",bootindex=2"
        argv += ["-drive", f"file={disk},format=raw,if=none,id=d{i}",
                 "-device", f"{device},serial={serial}-D{i}"]  # fmt: skip
    return argv


def _uefi(nvram: Path) -> list[str]:
    for path in (OVMF_CODE, OVMF_VARS):
        if not path.is_file():
            raise UserError(f"no UEFI firmware for a lab machine: {path} is missing "
                            "(install Debian's `ovmf` package)")  # fmt: skip
    if not nvram.exists():
        shutil.copyfile(OVMF_VARS, nvram)
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={nvram}"]  # fmt: skip


@dataclass
class LabMachine:
    """One QEMU TCG VM; `power_on` boots it from the network, like a server told PXE once."""

    name: str
    mac: str
    bridge: str
    workdir: Path
    disk_mib: int = 64
    memory_mib: int = 1024
    pxe: bool = True  # False: a NIC without a boot ROM, a machine that never network-boots
    uefi: bool = False  # True: OVMF firmware with this machine's own NVRAM, else SeaBIOS
    on_exit: Callable[[LabMachine, int], None] | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    boots: int = field(default=0, init=False)

    @property
    def serial(self) -> str:
        return f"LAB-{self.name.upper()}"

    @property
    def tap(self) -> str:
        return "amt" + self.mac.replace(":", "")[-8:]  # 11 characters: under IFNAMSIZ

    @property
    def disks(self) -> list[Path]:
        """The raw files behind vda (virtio) and nvme0n1 (NVMe), made on first use."""
        return raw_disks(self.workdir, 2, self.disk_mib)

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    @property
    def is_on(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self) -> list[str]:
        """The network first, then the disk: SeaBIOS by `-boot`, OVMF by boot indexes."""
        rom = "" if self.pxe else ",romfile="  # QEMU's default NIC ROM is Debian's iPXE
        if self.uefi:
            nvram, nic_boot, boot = self.workdir / "nvram.fd", ",bootindex=1", []
        else:
            nvram, nic_boot, boot = None, "", ["-boot", "order=nc"]
        return [*qemu_argv(self.serial, self.disks, self.console, self.memory_mib, reboots=True,
                           nvram=nvram), *boot,
                "-netdev", f"tap,id=n0,ifname={self.tap},script=no,downscript=no",
                "-device", f"virtio-net-pci,netdev=n0,mac={self.mac}{rom}{nic_boot}"]  # fmt: skip

    def power_on(self) -> None:
        with self._lock:
            if self.is_on:
                return
            if shutil.which("qemu-system-x86_64") is None:
                raise UserError("no QEMU here (install Debian's `qemu-system-x86` package)")
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._ensure_tap()
            self.boots += 1
            with (self.workdir / "qemu.log").open("ab") as qemu_log:
                self._proc = subprocess.Popen(self.argv(), stdout=qemu_log, stderr=qemu_log)
            log.info("lab machine %s on (boot %d)", self.name, self.boots)
            threading.Thread(target=self._watch, args=(self._proc,), daemon=True).start()

    def power_off(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
            log.info("lab machine %s off (BMC)", self.name)

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        """The VM exited: by itself (the ramdisk's poweroff) unless power_off took it."""
        rc = proc.wait()
        with self._lock:
            by_itself = self._proc is proc
            if by_itself:
                self._proc = None
        if by_itself and self.on_exit is not None:
            log.info("lab machine %s powered itself off (exit %d)", self.name, rc)
            self.on_exit(self, rc)

    def _ensure_tap(self) -> None:
        with IPRoute() as ipr:
            bridge = ipr.link_lookup(ifname=self.bridge)
            if not bridge:
                raise UserError(f"no bridge {self.bridge} for lab machine {self.name}")
            if not ipr.link_lookup(ifname=self.tap):
                ipr.link("add", ifname=self.tap, kind="tuntap", mode="tap")
            (index,) = ipr.link_lookup(ifname=self.tap)
            ipr.link("set", index=index, master=bridge[0], state="up")

    def remove(self) -> None:
        self.power_off()
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=self.tap):
                ipr.link("del", index=index)

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""


# The lab's daemons keep their files in root's 0700 test and state directories.
DAEMON_USER = "root"
SITE_PID = "site.pid"  # the site DHCP's pid file, in the lab's workdir


def site_dhcp_config(bridge: str, subnet: str, workdir: Path) -> str:
    """The site's own DHCP server on the lab bridge: leases only, no DNS, no boot options."""
    network = ipaddress.ip_network(subnet)
    first, last = network.network_address + LEASE_FIRST, network.network_address + LEASE_LAST
    return "\n".join([
        "port=0", f"interface={bridge}", "bind-interfaces", "no-resolv", "no-hosts", "log-dhcp",
        f"dhcp-range={first},{last},{network.netmask},10m",
        f"dhcp-leasefile={workdir / 'site.leases'}", f"pid-file={workdir / SITE_PID}",
        f"user={DAEMON_USER}",
    ]) + "\n"  # fmt: skip


class MetalLab:
    """The boot network on a lab's bridge and the machines on it, powered by their BMC."""

    def __init__(self, bridge: str, subnet: str, boot_url: str, workdir: Path) -> None:
        self.bridge, self.subnet, self.workdir = bridge, subnet, workdir
        self.bootnet = BootNet(bridge, subnet, boot_url, workdir / "bootnet", user=DAEMON_USER)
        self.machines: dict[str, LabMachine] = {}  # by BMC system uuid
        self.power = PowerBridge(self._power)
        self.bmc: SushyEmulator | None = None
        self._daemons: list[subprocess.Popen[bytes]] = []

    def add(
        self, name: str, mac: str, pxe: bool = True, disk_mib: int = 64, uefi: bool = False
    ) -> FakeSystem:
        """A machine before start(): its BMC's system record, its VM (sparse disks)."""
        system = FakeSystem(uuid=f"00000000-0000-4000-8000-{mac.replace(':', '')}", name=name,
                            macs=[mac])  # fmt: skip
        self.machines[system.uuid] = LabMachine(
            name, mac, self.bridge, self.workdir / name, disk_mib=disk_mib, pxe=pxe, uefi=uefi,
            on_exit=self._exited,
        )  # fmt: skip
        return system

    def start(self, systems: list[FakeSystem]) -> MetalLab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.bootnet.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "site-dhcp.conf"
        conf.write_text(site_dhcp_config(self.bridge, self.subnet, self.workdir))
        self.power.start()
        try:
            log = self.workdir / "site-dhcp.log"
            self._daemons.append(run_dnsmasq(conf, log, self.workdir / SITE_PID))
            self._daemons.append(self.bootnet.start())
            self.bmc = SushyEmulator(self.workdir / "bmc", systems, notifier_url=self.power.url)
            self.bmc.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.bmc is not None:
            self.bmc.stop()
            self.bmc = None
        self.power.stop()
        for machine in self.machines.values():
            machine.remove()
        for daemon in self._daemons:
            daemon.terminate()
            daemon.wait(timeout=10)
        self._daemons.clear()

    def uuid(self, name: str) -> str:
        """The BMC system of the machine called `name`."""
        return next(u for u, m in self.machines.items() if m.name == name)

    def powered_off(self, name: str) -> bool:
        """The VM is off and its BMC says so (the fake applies a reset 1-11 s late, on a read:
        an operator's next step before that would meet a BMC still reading On)."""
        uuid = self.uuid(name)
        if self.machines[uuid].is_on or self.bmc is None:
            return False
        return self.bmc.system(uuid)["PowerState"] == "Off"

    def machine(self, name: str) -> LabMachine:
        return self.machines[self.uuid(name)]

    def _power(self, uuid: str, on: bool) -> None:
        machine = self.machines.get(uuid)
        if machine is None:
            return
        machine.power_on() if on else machine.power_off()

    def _exited(self, machine: LabMachine, rc: int) -> None:
        """Tell the BMC, as a real one would see its machine go dark."""
        uuid = self.uuid(machine.name)
        self.power.seen(uuid, False)
        if self.bmc is not None:
            self.bmc.reset(uuid, "ForceOff")
