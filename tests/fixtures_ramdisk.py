"""The ramdisk's real inputs and a real machine to boot it on.

The debs: the RAMDISK_PACKAGES closure from the Debian mirror, downloaded with the site
repository's own code once and cached across runs (like the site repository in
fixtures_provision). The machine: QEMU TCG with two disks and an SMBIOS serial, on slirp
with `restrict=on` (the VM reaches nothing) and one `guestfwd` that relays each connection
to 10.0.2.100:PORT to the hub on 127.0.0.1:PORT (socat), so the ramdisk talks TLS to a real
hub whose certificate covers that address. The kernel command line, which carries the boot
token, goes in through a 0600 `-readconfig` file, not QEMU's argv.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from aiorch.lab.metal import DISK_NAMES, qemu_argv, raw_disks
from aiorch.lab.state import locked
from aiorch.metal.ramdisk import RamdiskFiles, build_ramdisk
from aiorch.repo.debs import default_sources, download_debs
from aiorch.repo.packages import RAMDISK_PACKAGES
from aiorch.wait import wait_until

PROJECT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("AIORCH_RAMDISK_CACHE", PROJECT / ".data" / "ramdisk-cache"))
ARCHES = ("amd64",)
HUB_IP = "10.0.2.100"  # the hub as the VM sees it: slirp's guestfwd address


def ramdisk_debs() -> Path:
    """The closure's debs, fetched where the package list or the sources changed (under a
    lock: `make test` runs the build tests and the lab test on two workers)."""
    sources = default_sources(arches=ARCHES)
    key = hashlib.sha256(json.dumps([sorted(RAMDISK_PACKAGES), list(sources)]).encode())
    dest = CACHE / "debs" / key.hexdigest()[:16]
    with locked(CACHE / "lock"):
        if not (dest / ".complete").exists():
            download_debs(RAMDISK_PACKAGES, sources, dest, ARCHES)
            (dest / ".complete").touch()
    return dest


def cached_ramdisk() -> RamdiskFiles:
    """The ramdisk built from those debs (rebuilt only when its inputs changed)."""
    debs = ramdisk_debs()
    with locked(CACHE / "lock"):
        return build_ramdisk(debs, CACHE / "build")


@dataclass
class VmRun:
    rc: int
    console: str
    seconds: float
    argv: str  # what ps showed for QEMU while it ran


def vm_disks(work: Path, size_mib: int = 64) -> list[Path]:
    """Three raw disk files: virtio (vda), NVMe (nvme0n1) and SATA on AHCI (sda)."""
    return raw_disks(work, len(DISK_NAMES), size_mib)


class Vm:
    """One QEMU TCG machine booting the ramdisk; `wait()` for it to power itself off."""

    def __init__(
        self,
        files: RamdiskFiles,
        ca_initrd: Path,
        work: Path,
        *,
        hub_port: int,
        token: str,
        mac: str,
        serial: str,
        disks: list[Path],
        relay_port: int | None = None,
    ) -> None:
        """`relay_port`: where the relay connects on 127.0.0.1 (default the hub's port)."""
        if shutil.which("qemu-system-x86_64") is None or shutil.which("socat") is None:
            raise AssertionError("the ramdisk lab test needs apt-get install qemu-system-x86 socat")
        work.mkdir(parents=True, exist_ok=True)
        initrd = work / "initrd-and-ca.img"  # QEMU 7.2 takes one -initrd; Linux reads both parts
        initrd.write_bytes(files.initrd.read_bytes() + ca_initrd.read_bytes())
        hub = f"https://{HUB_IP}:{hub_port}"
        append = f"console=ttyS0 quiet aiorch.hub={hub} aiorch.token={token} aiorch.mac={mac}"
        config = work / "qemu.cfg"
        config.touch(mode=0o600)
        config.write_text(
            f'[machine]\n  kernel = "{files.kernel}"\n  initrd = "{initrd}"\n'
            f'  append = "{append}"\n'
        )
        self.console_path = work / "console.log"
        relay = f"socat STDIO TCP:127.0.0.1:{relay_port or hub_port}"
        argv = [*qemu_argv(serial, disks, self.console_path), "-readconfig", str(config),
                "-netdev", f"user,id=n0,restrict=on,guestfwd=tcp:{HUB_IP}:{hub_port}-cmd:{relay}",
                "-device", f"virtio-net-pci,netdev=n0,mac={mac}"]  # fmt: skip
        self.started = time.monotonic()
        with (work / "qemu.log").open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        cmdline = Path(f"/proc/{self.proc.pid}/cmdline")
        wait_until(lambda: b"qemu-system" in cmdline.read_bytes(), timeout=10, what="QEMU exec")
        self.argv = cmdline.read_bytes().replace(b"\0", b" ").decode()  # what ps shows

    def console(self) -> str:
        return self.console_path.read_text(errors="replace") if self.console_path.exists() else ""

    def wait_console(self, text: str, timeout: float = 180) -> None:
        wait_until(lambda: text in self.console(), timeout=timeout, what=f"{text!r} on the console")

    def wait(self, timeout: float = 300) -> VmRun:
        """Until the VM powers off (or fail after `timeout`, showing the console)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"the VM did not power off in {timeout:.0f} s:\n{self.console()[-4000:]}"
            ) from None
        return VmRun(rc, self.console(), time.monotonic() - self.started, self.argv)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
