"""The boot network's DHCP side: dnsmasq in proxy-DHCP mode with its TFTP server, beside the
site's own DHCP (which keeps handing out the addresses) and any DNS server (port=0).

A firmware's PXE ROM gets Debian's iPXE over TFTP (`undionly.kpxe` for BIOS, `ipxe.efi` for
x86-64 UEFI); iPXE asks again, now with DHCP option 175, and is pointed at the hub's boot
listener (``/boot/chain.ipxe``, aiorch/metal/ipxe.py), which chains to the machine's own
script. dnsmasq, not a Python DHCP server: it is what the anchors' measured recipe runs.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from aiorch.errors import UserError
from aiorch.wait import wait_until

IPXE_DIR = Path("/usr/lib/ipxe")  # Debian's `ipxe` package
# dnsmasq appends ".0" to an x86PC boot file's basename (PXE convention); EFI names stay whole.
BIOS_FILE, EFI_FILE = "undionly.0", "ipxe.efi"
_IFACE = re.compile(r"^[A-Za-z0-9_.-]{1,15}\Z")
_BOOT_URL = re.compile(r"^http://[A-Za-z0-9.\[\]:-]+\Z")


@dataclass(frozen=True)
class BootNet:
    """Proxy-DHCP and TFTP on one interface for one subnet, pointing iPXE at `boot_url`."""

    interface: str
    subnet: str  # the site's subnet on that interface, e.g. 10.88.0.0/24
    boot_url: str  # the hub's boot listener, http://ADDRESS:PORT
    workdir: Path
    user: str = "nobody"  # dnsmasq drops to this user, who must be able to read tftp_root

    def __post_init__(self) -> None:
        if not _IFACE.match(self.interface):
            raise UserError(f"not a network interface name: {self.interface!r}")
        try:
            ipaddress.ip_network(self.subnet, strict=True)
        except ValueError as exc:
            raise UserError(f"not a subnet: {self.subnet!r} ({exc})") from None
        if not _IFACE.match(self.user):
            raise UserError(f"not a user name: {self.user!r}")
        if not _BOOT_URL.match(self.boot_url):
            raise UserError(f"the boot listener is http://ADDRESS:PORT, got {self.boot_url!r}")

    @property
    def tftp_root(self) -> Path:
        return self.workdir / "tftp"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "dnsmasq.pid"

    @property
    def conf_path(self) -> Path:
        return self.workdir / "dnsmasq.conf"

    def config(self) -> str:
        network = ipaddress.ip_network(self.subnet)
        chain = f"{self.boot_url}/boot/chain.ipxe"
        lines = [
            "port=0",  # no DNS: the site (or podman's aardvark-dns) has that
            f"interface={self.interface}",
            "bind-interfaces",  # beside the site's DHCP server on the same bridge
            "no-resolv",
            "no-hosts",
            "log-dhcp",
            f"dhcp-range={network.network_address},proxy,{network.netmask}",
            "dhcp-match=set:ipxe,175",  # iPXE itself asking: give it the script, not iPXE again
            f'pxe-service=tag:!ipxe,x86PC,"aiorch",{BIOS_FILE.removesuffix(".0")}',
            f'pxe-service=tag:!ipxe,X86-64_EFI,"aiorch",{EFI_FILE}',
            f'pxe-service=tag:ipxe,x86PC,"aiorch",{chain}',
            f'pxe-service=tag:ipxe,X86-64_EFI,"aiorch",{chain}',
            "enable-tftp",
            f"tftp-root={self.tftp_root}",
            f"pid-file={self.pid_file}",
            f"user={self.user}",
        ]
        return "\n".join(lines) + "\n"

    def prepare(self, ipxe_dir: Path = IPXE_DIR) -> Path:
        """Write the TFTP root (copies of Debian's iPXE binaries) and the config; check it
        with dnsmasq's own parser, so that a bad option fails here with its message."""
        self.tftp_root.mkdir(parents=True, exist_ok=True)
        for target, source in ((BIOS_FILE, "undionly.kpxe"), (EFI_FILE, "ipxe.efi")):
            binary = ipxe_dir / source
            if not binary.is_file():
                raise UserError(f"no iPXE binary at {binary} (install Debian's `ipxe` package)")
            shutil.copyfile(binary, self.tftp_root / target)
        self.conf_path.write_text(self.config())
        checked = subprocess.run(
            [dnsmasq_binary(), "--test", f"--conf-file={self.conf_path}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if checked.returncode != 0:
            raise UserError(f"dnsmasq refused {self.conf_path}: {checked.stderr.strip()}")
        return self.conf_path

    def start(self) -> subprocess.Popen[bytes]:
        """dnsmasq in the foreground (the caller owns the process), logging to workdir."""
        return run_dnsmasq(self.prepare(), self.workdir / "dnsmasq.log", self.pid_file)


def run_dnsmasq(
    conf: Path, log: Path, pid_file: Path, timeout: float = 10
) -> subprocess.Popen[bytes]:
    """dnsmasq with `conf` (which names `pid_file`), in the foreground; returns once it has
    bound its sockets (it writes the pid file after that), or fails with what it said."""
    pid_file.unlink(missing_ok=True)
    errors = log.with_suffix(".err")
    with errors.open("wb") as err:
        proc = subprocess.Popen(
            [dnsmasq_binary(), "--keep-in-foreground", f"--conf-file={conf}",
             f"--log-facility={log}"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        wait_until(
            lambda: pid_file.exists() or proc.poll() is not None, timeout=timeout, what="dnsmasq up"
        )
    except TimeoutError:
        proc.kill()
        raise
    if proc.poll() is not None:
        said = errors.read_text(errors="replace").strip()
        raise UserError(f"dnsmasq ({conf}) exited: {said or 'see ' + str(log)}")
    return proc


def dnsmasq_binary() -> str:
    found = shutil.which("dnsmasq") or next(
        (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if Path(p).is_file()), None
    )
    if found is None:
        raise UserError("no dnsmasq on this machine (install Debian's `dnsmasq-base` package)")
    return found
