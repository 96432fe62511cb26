"""The agent's side of power control for a box with no BMC: a request in the desired state
(edge_agent.contract.power) sets the firmware's next boot and reboots or powers off.

Each request acts once: its outcome is saved before the reboot, so the agent that starts
again reports it instead of rebooting in a loop, and a hub that sends the request again
gets the same outcome back.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.contract.fields import ContractError
from edge_agent.contract.power import (
    MAX_MESSAGE,
    PowerOutcome,
    PowerRequest,
    outcome_entry,
    parse_outcome,
    parse_power,
)
from edge_agent.state import write_private

log = logging.getLogger("aiorch.agent.power")

Run = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]
ENTRY_RE = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?)\s+(.*)$")
NETWORK_RE = re.compile(r"PXE|Network|IPv4|IPv6|HTTP|MAC\(", re.IGNORECASE)
COMMANDS = {"reboot": ["systemctl", "reboot"], "poweroff": ["systemctl", "poweroff"]}


def run_command(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


@dataclass(frozen=True)
class BootEntry:
    number: str  # four hex digits, as efibootmgr writes them
    active: bool
    label: str  # the description and, with -v, the device path

    @property
    def network(self) -> bool:
        return bool(NETWORK_RE.search(self.label))


class NoBootEntry(Exception):
    """The firmware has no entry to boot what was asked (one line, for the hub)."""


def boot_entries(listing: str) -> tuple[str | None, list[str], list[BootEntry]]:
    """efibootmgr -v's BootCurrent, BootOrder and entries."""
    current, order, entries = None, [], []
    for line in listing.splitlines():
        if line.startswith("BootCurrent:"):
            current = line.split(":", 1)[1].strip().upper()
        elif line.startswith("BootOrder:"):
            order = [n.strip().upper() for n in line.split(":", 1)[1].split(",") if n.strip()]
        elif match := ENTRY_RE.match(line):
            number, star, label = match.groups()
            entries.append(BootEntry(number.upper(), star == "*", label))
    return current, order, entries


def choose_entry(listing: str, boot_next: str, mac: str | None) -> BootEntry:
    """pxe: the network entry of the NIC with `mac`, else the first network entry in boot
    order; disk: the entry this OS booted from, else the first non-network one in order."""
    current, order, entries = boot_entries(listing)
    rank = {number: position for position, number in enumerate(order)}
    ordered = sorted((e for e in entries if e.active), key=lambda e: rank.get(e.number, 1 << 16))
    if boot_next == "pxe":
        network = [e for e in ordered if e.network]
        wanted = (mac or "").replace(":", "").upper()
        by_mac = [e for e in network if wanted and wanted in e.label.upper().replace(":", "")]
        if by_mac or network:
            return (by_mac or network)[0]
        raise NoBootEntry("the firmware lists no network boot entry (efibootmgr -v)")
    local = [e for e in ordered if not e.network]
    booted = [e for e in local if e.number == current]
    if booted or local:
        return (booted or local)[0]
    raise NoBootEntry("the firmware lists no local disk boot entry (efibootmgr -v)")


class PowerControl:
    """Acts on the desired state's power request; `outcome` is what the report carries."""

    def __init__(self, state_dir: Path, run: Run = run_command) -> None:
        self.path = state_dir / "power.json"
        self.run = run
        self.outcome = self._saved()

    def _saved(self) -> PowerOutcome | None:
        try:
            return parse_outcome(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, ContractError) as exc:
            log.error("power: %s is unreadable (%s); a repeated request would act again",
                      self.path, exc)  # fmt: skip
            return None

    def report(self) -> dict[str, Any] | None:
        return None if self.outcome is None else outcome_entry(self.outcome)

    def apply(self, document: dict[str, Any]) -> None:
        try:
            request = parse_power(document)
        except ContractError as exc:
            log.error("desired state: %s; no power action taken", exc)
            return
        if request is None or (self.outcome is not None and self.outcome.id == request.id):
            return
        try:
            done = self._prepare(request)
        except NoBootEntry as exc:
            self._save(request, False, str(exc))
            return
        # Saved first: the command may not return (the machine goes down), and the agent
        # that starts after it must find this request done.
        self._save(request, True, done)
        log.warning("power: %s", done)
        result = self.run(COMMANDS[request.action])
        if result.returncode != 0:
            self._save(request, False, f"{' '.join(COMMANDS[request.action])} failed: "
                       f"{_last_line(result)}")  # fmt: skip

    def _prepare(self, request: PowerRequest) -> str:
        """Set the next boot, if one was asked; what will be done, in words."""
        if request.boot_next is None:
            return f"{request.action} (the firmware's boot order)"
        try:
            listing = self.run(["efibootmgr", "-v"])
        except FileNotFoundError:
            raise NoBootEntry("efibootmgr is not installed: no next boot can be set") from None
        if listing.returncode != 0:
            raise NoBootEntry(f"efibootmgr failed (not booted by UEFI?): {_last_line(listing)}")
        entry = choose_entry(listing.stdout, request.boot_next, request.mac)
        chosen = self.run(["efibootmgr", "--bootnext", entry.number])
        if chosen.returncode != 0:
            raise NoBootEntry(f"efibootmgr --bootnext {entry.number} failed: "
                              f"{_last_line(chosen)}")  # fmt: skip
        label = entry.label.split("\t", 1)[0].strip()
        return f"{request.action}, next boot {request.boot_next}: Boot{entry.number} {label}"

    def _save(self, request: PowerRequest, ok: bool, message: str) -> None:
        self.outcome = PowerOutcome(request.id, ok, message[:MAX_MESSAGE], round(time.time(), 3))
        write_private(self.path, outcome_entry(self.outcome))


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit {result.returncode}"
