"""Out-of-band server control (Redfish through sushy, IPMI through ipmitool, or a box's own
agent where it has no BMC) behind one Bmc protocol; `connect` picks the driver from the
address."""

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
    PowerChannel,
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
    "PowerChannel",
    "PowerState",
    "connect",
    "parse_bmc",
]


def connect(
    address: BmcAddress,
    username: str,
    password: str,
    *,
    timeout: float = 10.0,
    channel: PowerChannel | None = None,
) -> Bmc:
    """A driver for the address's scheme; Redfish logs in (and may raise) here, IPMI later.
    An agent:// address needs the hub's `channel` to its agents (credentials are unused)."""
    if address.scheme == "agent":
        from .agent import AgentBmc

        if channel is None:
            raise BmcUnsupported(f"{address.display()}: no channel to agents here")
        return AgentBmc(address, channel)
    if address.scheme == "ipmi":
        from .ipmi import IpmiBmc

        return IpmiBmc(address, username, password, timeout=timeout)
    from .redfish import RedfishBmc

    return RedfishBmc(address, username, password, timeout=timeout)
