"""Out-of-band server control (Redfish through sushy, IPMI through ipmitool) behind one Bmc
protocol; `connect` picks the driver from the address."""

from __future__ import annotations

from .address import BmcAddress, parse_bmc
from .base import (
    Bmc,
    BmcAuthFailed,
    BmcError,
    BmcUnreachable,
    BmcUnsupported,
    BootDevice,
    PowerAction,
    PowerState,
)

__all__ = [
    "Bmc",
    "BmcAddress",
    "BmcAuthFailed",
    "BmcError",
    "BmcUnreachable",
    "BmcUnsupported",
    "BootDevice",
    "PowerAction",
    "PowerState",
    "connect",
    "parse_bmc",
]


def connect(address: BmcAddress, username: str, password: str, *, timeout: float = 10.0) -> Bmc:
    """A driver for the address's scheme; Redfish logs in (and may raise) here, IPMI later."""
    if address.scheme == "ipmi":
        from .ipmi import IpmiBmc

        return IpmiBmc(address, username, password, timeout=timeout)
    from .redfish import RedfishBmc

    return RedfishBmc(address, username, password, timeout=timeout)
