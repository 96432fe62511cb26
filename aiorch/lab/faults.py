"""Fault hooks on lab hosts: what a flaky edge site does to the hub, on demand.

* cut / heal: the host can no longer open connections to this machine (the hub
  on the gateway address); see ``firewall`` for what exactly is dropped.
* hide / unhide: this machine can no longer open connections to the host (SSH from the
  hub times out), while the other lab hosts still reach it: a host behind a bastion.
* pause / resume: ``podman pause`` freezes every process (a hung box).
* restart: a real reboot of the container; returns once sshd answers again.
* kill: ``kill -9`` of a named process inside the host.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiorch.errors import UserError
from aiorch.lab import firewall
from aiorch.lab.podman import podman

if TYPE_CHECKING:
    from aiorch.lab.fleet import Lab


class Faults:
    """Fault hooks bound to one lab; every method takes host names (``edge1-1``)."""

    def __init__(self, lab: Lab) -> None:
        self._lab = lab

    def cut(self, *hosts: str) -> None:
        for name in hosts:
            firewall.cut(self._lab.table, self._lab.host(name).address)

    def heal(self, *hosts: str) -> None:
        for name in hosts:
            firewall.heal(self._lab.table, self._lab.host(name).address)

    def hide(self, *hosts: str) -> None:
        for name in hosts:
            firewall.hide(self._lab.table, self._lab.host(name).address)

    def unhide(self, *hosts: str) -> None:
        for name in hosts:
            firewall.unhide(self._lab.table, self._lab.host(name).address)

    def pause(self, *hosts: str) -> None:
        for name in hosts:
            podman("pause", self._lab.host(name).container)

    def resume(self, *hosts: str) -> None:
        for name in hosts:
            podman("unpause", self._lab.host(name).container)

    def restart(self, *hosts: str) -> None:
        """Reboot: systemd shuts down, the container starts afresh, same address and keys."""
        found = [self._lab.host(name) for name in hosts]
        for host in found:
            podman("restart", host.container)
        self._lab.wait_ready(found)

    def kill(self, host: str, process: str) -> None:
        """SIGKILL every process on ``host`` whose name is exactly ``process``."""
        proc = self._lab.exec(host, ["pkill", "--signal", "KILL", "--exact", process], check=False)
        if proc.returncode == 1:
            raise UserError(f"no process named {process!r} on {host}")
        if proc.returncode != 0:
            raise UserError(f"pkill on {host} failed: {proc.stderr.strip()}")
