"""Simulated UEFI firmware for the agent's no-BMC power control: no machine here boots by
UEFI, and no test may reboot the machine it runs on."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

LISTING = """BootCurrent: 0001
Timeout: 0 seconds
BootOrder: 0001,0003,0002,0000
Boot0000* UiApp\tFvVol(7cb8bdc9)/FvFile(462caa21)
Boot0001* debian\tHD(1,GPT,0d1c...)/File(\\EFI\\debian\\shimx64.efi)
Boot0002* UEFI PXEv4 (MAC:525400000007)\tPciRoot(0x0)/Pci(0x3,0x0)/MAC(525400000007,1)/IPv4(0.0.0.0)
Boot0003* UEFI PXEv4 (MAC:525400000001)\tPciRoot(0x0)/Pci(0x4,0x0)/MAC(525400000001,1)/IPv4(0.0.0.0)
Boot0004  UEFI HTTPv4 (MAC:525400000007)\tPciRoot(0x0)/Pci(0x3,0x0)/MAC(525400000007,1)/Uri()
"""


class Firmware:
    """Simulated UEFI firmware and systemd: answers efibootmgr, records every command."""

    def __init__(self, listing: str | None = LISTING, fail: str | None = None) -> None:
        self.listing = listing
        self.fail = fail  # the command (argv[0] argv[1]) that exits 1
        self.commands: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        argv = list(argv)
        if argv[0] == "efibootmgr" and self.listing is None:
            raise FileNotFoundError("efibootmgr")
        self.commands.append(argv)
        if " ".join(argv[:2]) == self.fail:
            return subprocess.CompletedProcess(argv, 1, "", "EFI variables are not supported\n")
        out = self.listing if argv == ["efibootmgr", "-v"] else ""
        return subprocess.CompletedProcess(argv, 0, out or "", "")
