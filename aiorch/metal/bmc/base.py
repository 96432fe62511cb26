"""What the hub codes against for out-of-band control, whatever the protocol: the Bmc protocol,
its literal types and its errors (one-line messages; credentials never in them)."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from aiorch.errors import AiorchError, InvalidInput, Unavailable

from .address import BmcAddress

PowerState = Literal["on", "off", "unknown"]
BootDevice = Literal["pxe", "disk", "cd"]
PowerAction = Literal["on", "off", "cycle"]
AgentAction = Literal["reboot", "poweroff"]  # what an agent can do to its own machine


class BmcError(AiorchError):
    """A BMC answered, but not in a way we can use."""


class BmcUnreachable(Unavailable):
    """Connection refused or timed out: worth retrying later."""


class BmcAuthFailed(InvalidInput):
    """The BMC refused the username/password."""


class BmcUnsupported(InvalidInput):
    """The BMC cannot do this (e.g. IPMI has no virtual media)."""


class PowerChannel(Protocol):
    """How the "agent://HOST" driver reaches a machine that has no BMC: through the desired
    state of HOST's agent (the hub's services.agent_power)."""

    def power_state(self, host: str) -> PowerState: ...
    def request(self, host: str, action: AgentAction) -> None: ...
    def set_boot_next(self, host: str, device: BootDevice) -> None: ...
    def boot_next(self, host: str) -> BootDevice | None: ...


class Bmc(Protocol):
    address: BmcAddress

    @property
    def simulated(self) -> str | None:
        """e.g. "sushy-tools fake" or "pyghmi-bmc" when the BMC is an emulator; None otherwise."""

    def power_state(self) -> PowerState: ...
    def power(self, action: PowerAction) -> None: ...
    def set_boot_once(self, device: BootDevice) -> None: ...
    def boot_override(self) -> dict[str, str]: ...
    def insert_media(self, url: str) -> None: ...
    def inventory(self) -> dict[str, Any]: ...
