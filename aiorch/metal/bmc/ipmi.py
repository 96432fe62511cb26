"""IPMI through the ipmitool subprocess (lanplus): the password travels in IPMI_PASSWORD (-E),
never in argv, and ipmitool's messages are read into the Bmc errors."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from aiorch.errors import AiorchError

from .address import BmcAddress
from .base import (
    BmcAuthFailed,
    BmcError,
    BmcUnreachable,
    BmcUnsupported,
    BootDevice,
    PowerAction,
    PowerState,
)

# What the lab's pyghmi BMC answers in Get Device ID (as ipmitool reads it), so a driver can say it
# is talking to one: 0x0FFFFF is the IPMI spec's reserved manufacturer ID, no real vendor sends it.
LAB_MANUFACTURER_ID = 0x0FFFFF
LAB_PRODUCT_ID = 0x3C00
_BOOTDEV = {"pxe": "pxe", "disk": "disk", "cd": "cdrom"}
_AUTH_HINTS = ("rakp 2 hmac is invalid", "unauthorized name", "invalid authentication")
_CHASSIS = {"on": "on", "off": "off", "cycle": "cycle"}


class IpmiBmc:
    """One BMC reached with ipmitool; every call is one short ipmitool run."""

    def __init__(
        self, address: BmcAddress, username: str, password: str, *, timeout: float = 10.0
    ) -> None:
        self.address = address
        self._username, self._password, self._timeout = username, password, timeout
        self._simulated: str | None = None
        self._probed = False

    @property
    def simulated(self) -> str | None:
        """'pyghmi-bmc' when Get Device ID carries the lab emulator's ids (asked once)."""
        if not self._probed:
            ids = self._device_ids()
            self._simulated = "pyghmi-bmc" if ids == (LAB_MANUFACTURER_ID, LAB_PRODUCT_ID) else None
            self._probed = True
        return self._simulated

    def command(self, *args: str) -> list[str]:
        """The ipmitool argv for ``args``: host, port and user, never the password."""
        a = self.address
        base = [
            "ipmitool",
            "-I",
            "lanplus",
            "-H",
            a.host,
            "-p",
            str(a.port),
            "-U",
            self._username,
            "-E",
        ]
        return [*base, "-v", "-N", "1", "-R", "2", *args]  # -v: ipmitool names a bad HMAC only then

    def _run(self, *args: str) -> str:
        env = {**os.environ, "IPMI_PASSWORD": self._password}
        shown = self.address.display()
        try:
            proc = subprocess.run(
                self.command(*args), env=env, capture_output=True, text=True, timeout=self._timeout
            )
        except subprocess.TimeoutExpired:
            raise BmcUnreachable(
                f"BMC {shown} is unreachable: no answer in {self._timeout:g}s"
            ) from None
        except FileNotFoundError:
            raise AiorchError("ipmitool is not installed (apt-get install ipmitool)") from None
        if proc.returncode == 0:
            return proc.stdout
        err = " ".join((proc.stderr or proc.stdout).split()).replace(self._password, "***")
        low = err.lower()
        if any(hint in low for hint in _AUTH_HINTS):
            raise BmcAuthFailed(f"BMC {shown} refused the credentials (IPMI RAKP)")
        if "unable to establish" in low or "no response" in low or "timeout" in low:
            raise BmcUnreachable(f"BMC {shown} is unreachable: {err[:200]}")
        raise BmcError(f"BMC {shown}: ipmitool {' '.join(args)} failed: {err[:200]}")

    def _device_ids(self) -> tuple[int, int]:
        fields = {}
        for line in self._run("mc", "info").splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        try:
            return int(fields.get("Manufacturer ID", "-1")), int(
                fields.get("Product ID", "-1").split()[0]
            )
        except (ValueError, IndexError):
            return (-1, -1)

    def power_state(self) -> PowerState:
        out = self._run("chassis", "power", "status").lower()
        return "on" if "is on" in out else "off" if "is off" in out else "unknown"

    def power(self, action: PowerAction) -> None:
        if action == "cycle" and self.power_state() == "off":
            self._run("chassis", "power", "on")
            return
        self._run("chassis", "power", _CHASSIS[action])

    def set_boot_once(self, device: BootDevice) -> None:
        self._run("chassis", "bootdev", _BOOTDEV[device])

    def boot_override(self) -> dict[str, str]:
        out = self._run("chassis", "bootparam", "get", "5")
        target = next(
            (
                line.split(":", 1)[1].strip()
                for line in out.splitlines()
                if "Boot Device Selector" in line
            ),
            "",
        )
        persistent = (
            "persistent" in out.lower() and "options apply to all future boots" in out.lower()
        )
        return {"target": target, "enabled": "Continuous" if persistent else "Once"}

    def insert_media(self, url: str) -> None:
        raise BmcUnsupported(
            f"BMC {self.address.display()} speaks IPMI, which has no virtual media; use Redfish"
        )

    def inventory(self) -> dict[str, Any]:
        """What FRU 0 says (manufacturer, product name, serial); {} when the BMC has no FRU."""
        try:
            out = self._run("fru", "print", "0")
        except BmcError:
            return {}
        fru: dict[str, str] = {}
        for line in out.splitlines():
            key, _, value = line.partition(":")
            fru[key.strip()] = value.strip()
        pick = {
            "manufacturer": ("Product Manufacturer", "Board Mfg"),
            "model": ("Product Name", "Board Product"),
            "serial": ("Product Serial", "Board Serial"),
        }
        return {
            k: next(fru[n] for n in names if fru.get(n))
            for k, names in pick.items()
            if any(fru.get(n) for n in names)
        }
