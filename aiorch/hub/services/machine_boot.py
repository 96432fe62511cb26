"""What a PXE-booting machine is told to boot, from its state: the answer behind the boot
listener's ``GET /boot/{mac}.ipxe`` (aiorch/hub/boot_app.py).

The boot network is plain HTTP (the firmware's iPXE has no trust in the hub's CA), so only
what a booting machine needs is there: its script and the ramdisk's files. The script
carries the boot token of the machine's current step, which dies with that step; the
ramdisk then talks to the hub over TLS, verified against the CA in its own initrd.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from aiorch.errors import InvalidInput, NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import machines
from aiorch.metal import ipxe
from aiorch.metal.contract import normal_mac
from aiorch.metal.lifecycle import State

log = logging.getLogger("aiorch.hub.boot")

# Steps the ramdisk does; states in which the machine runs its own OS from its disk.
RAMDISK_STATES = frozenset(
    {State.INSPECTING, State.BURNING_IN, State.PROVISIONING, State.RELEASING}
)
DISK_STATES = frozenset({State.PROVISIONED, State.CONFIGURING, State.SERVING, State.DRAINING})
KERNEL_NAME = "vmlinuz"


@dataclass(frozen=True)
class BootFiles:
    """The ramdisk the boot listener serves, from one directory: the kernel ``vmlinuz`` and,
    as its initrds, every other file in name order (the userland first, the hub's CA after)."""

    directory: Path

    def image(self) -> ipxe.BootImage:
        kernel = self.directory / KERNEL_NAME
        initrds = sorted(
            p.name for p in self.directory.iterdir() if p.is_file() and p.name != KERNEL_NAME
        )
        if not kernel.is_file() or not initrds:
            raise NotFound(f"no ramdisk in {self.directory} (want {KERNEL_NAME} and an initrd)")
        return ipxe.BootImage(kernel=KERNEL_NAME, initrds=tuple(initrds))

    def path(self, name: str) -> Path:
        """A file the image names; NotFound for anything else (no path leaves the directory)."""
        image = self.image()
        if name not in (image.kernel, *image.initrds):
            raise NotFound(f"no boot file named {name}")
        return self.directory / ipxe.check_file_name(name)


def script_for(ctx: HubContext, mac_text: str, boot_url: str, files: BootFiles | None) -> str:
    """The iPXE script for the machine with this MAC, as its state is now."""
    try:
        mac = normal_mac(mac_text)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    rows = list(ctx.store.read().query("SELECT * FROM machines WHERE mac = ?", [mac]))
    if not rows:
        log.info("PXE boot from %s: not an enrolled machine, nothing to boot", mac)
        return ipxe.nothing_script(f"{mac} is not an enrolled machine")
    machine = rows[0]
    name, state = machine["name"], State(machine["state"])
    if state in DISK_STATES:
        log.info("machine %s PXE-booted in %s: boot from its disk", name, state)
        return ipxe.local_disk_script(f"machine {name} is {state}: booting from its disk")
    if state not in RAMDISK_STATES or not machine["boot_token"]:
        log.info("machine %s PXE-booted in %s: nothing to boot", name, state)
        return ipxe.nothing_script(f"machine {name} is {state}: nothing to boot from the network")
    if files is None or ctx.settings.metal_hub_url is None:
        log.warning("machine %s PXE-booted in %s, but this hub serves no ramdisk", name, state)
        return ipxe.nothing_script(f"machine {name} is {state} but the hub serves no ramdisk")
    token = ctx.sealer.unseal(machine["boot_token"], machines.token_binding(name))
    image = files.image()
    cmdline = ipxe.kernel_cmdline(ctx.settings.metal_hub_url, token, mac, image.initrds)
    log.info("machine %s PXE-booted in %s: serving the ramdisk", name, state)
    note = f"machine {name} is {state}: booting the aiorch ramdisk"
    return ipxe.ramdisk_script(f"{boot_url.rstrip('/')}/boot/files", image, cmdline, note)
