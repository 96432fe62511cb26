"""The iPXE scripts the hub's boot listener answers with, and the ramdisk's kernel command line.

A machine's firmware PXE-boots Debian's iPXE (over dnsmasq's proxy-DHCP and TFTP,
aiorch/metal/bootnet.py), which fetches ``/boot/chain.ipxe`` and from it
``/boot/${mac}.ipxe``: there the machine's state decides between the ramdisk, its own disk
and nothing. Scripts are plain text; every value put into one is checked here, so that a
stored name or URL can never add a command to it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from aiorch.metal.contract import normal_mac

HEADER = "#!ipxe\n"
# What iPXE must never see in a value: whitespace ends an argument, `${` expands a setting,
# `;`/`||`/`&&` chain commands, a newline starts one.
_UNSAFE = re.compile(r"[\s;&|$`\"'\\]")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,256}\Z")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


@dataclass(frozen=True)
class BootImage:
    """The ramdisk as the boot listener serves it: a kernel and its initrds (the userland
    first, then the hub's CA), by file name under ``/boot/files/``."""

    kernel: str
    initrds: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in (self.kernel, *self.initrds):
            check_file_name(name)
        if not self.initrds:
            raise ValueError("a boot image needs at least one initrd")


def check_file_name(name: str) -> str:
    if not _FILE_NAME.match(name):
        raise ValueError(f"not a boot file name: {name!r} (letters, digits, '.', '_', '-')")
    return name


def _safe(value: str, what: str) -> str:
    if not value or _UNSAFE.search(value):
        raise ValueError(f"{what} cannot go into an iPXE script: {value!r}")
    return value


def kernel_cmdline(
    hub_url: str, token: str, mac: str, initrds: Sequence[str] = (), console: str = "ttyS0"
) -> str:
    """What the ramdisk's init reads (aiorch.hub, aiorch.token, aiorch.mac). UEFI's kernel
    stub loads only the initrds the command line names (``initrd=NAME``, one each); a BIOS
    boot ignores them, so they are always given."""
    if not hub_url.startswith("https://"):
        raise ValueError(
            f"the ramdisk talks to the hub over TLS: want an https URL, got {hub_url!r}"
        )
    if not _TOKEN.match(token):
        raise ValueError("a boot token is 16 to 256 URL-safe characters")
    words = [
        f"console={_safe(console, 'the console')}",
        "quiet",  # else the kernel prints its command line, boot token and all, on the console
        f"aiorch.hub={_safe(hub_url.rstrip('/'), 'the hub URL')}",
        f"aiorch.token={token}",
        f"aiorch.mac={normal_mac(mac)}",
        *(f"initrd={check_file_name(name)}" for name in initrds),
    ]
    return " ".join(words)


def ramdisk_script(files_url: str, image: BootImage, cmdline: str, note: str) -> str:
    """Boot the ramdisk: fetch the kernel and each initrd by name, then boot."""
    base = _safe(files_url.rstrip("/"), "the files URL")
    for word in cmdline.split(" "):
        _safe(word, "a kernel argument")
    lines = [
        f"echo aiorch: {_safe_text(note)}",
        f"kernel {base}/{image.kernel} {cmdline}",
        *(f"initrd --name {name} {base}/{name}" for name in image.initrds),
        "boot",
    ]
    return HEADER + "\n".join(lines) + "\n"


def local_disk_script(note: str) -> str:
    """Boot from the local disk: leave iPXE, and the firmware tries its next boot device."""
    return HEADER + f"echo aiorch: {_safe_text(note)}\nexit\n"


def nothing_script(note: str, pause_s: int = 5) -> str:
    """Boot nothing from the network: say why on the console, long enough to read, and leave
    iPXE with a failure so that the firmware moves on."""
    return HEADER + f"echo aiorch: {_safe_text(note)}\nsleep {int(pause_s)}\nexit 1\n"


def chain_script(boot_url: str) -> str:
    """The first script (the DHCP filename names it): chain to this machine's own script.
    `${mac}` is the MAC of the NIC iPXE booted from, expanded by iPXE itself."""
    return HEADER + f"chain {_safe(boot_url.rstrip('/'), 'the boot URL')}/boot/${{mac}}.ipxe\n"


def _safe_text(text: str) -> str:
    """A note for `echo`: one line, no setting expansion, no chained command."""
    return re.sub(r"[^A-Za-z0-9 .,:()/_+=@-]", "_", text.replace("\n", " "))[:200]
