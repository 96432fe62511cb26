"""The "no BMC" driver, for edge boxes whose only way in is their agent: power off and reboot
through the agent's desired state, the next boot set by the agent (efibootmgr --bootnext).
What it cannot do (power on a machine that is off, virtual media) is one clear refusal."""

from __future__ import annotations

from typing import Any

from .address import BmcAddress
from .base import BmcUnsupported, BootDevice, PowerAction, PowerChannel, PowerState


class AgentBmc:
    def __init__(self, address: BmcAddress, channel: PowerChannel) -> None:
        self.address = address
        self.channel = channel

    @property
    def simulated(self) -> str | None:
        return None  # a real agent on the machine; nothing here is emulated

    def power_state(self) -> PowerState:
        return self.channel.power_state(self.address.host)

    def power(self, action: PowerAction) -> None:
        if action == "off":
            self.channel.request(self.address.host, "poweroff")
            return
        state = self.power_state()
        if state != "on":
            raise BmcUnsupported(
                f"{self.address.display()} has no BMC and its agent is not online "
                f"(power {state}): power the machine on by hand"
            )
        if action == "cycle":
            self.channel.request(self.address.host, "reboot")
        # "on" while on: nothing to do, as with a BMC

    def set_boot_once(self, device: BootDevice) -> None:
        if device == "cd":
            raise BmcUnsupported(f"{self.address.display()} has no BMC: no virtual CD to boot")
        self.channel.set_boot_next(self.address.host, device)

    def boot_override(self) -> dict[str, str]:
        device = self.channel.boot_next(self.address.host)
        return {"target": device or "", "enabled": "Once" if device else "Disabled"}

    def insert_media(self, url: str) -> None:
        raise BmcUnsupported(f"{self.address.display()} has no BMC: no virtual media")

    def inventory(self) -> dict[str, Any]:
        return {}  # the ramdisk takes the inventory
