"""Redfish through sushy (Ironic's library), with Ironic's fallbacks: ForceOn when On is refused,
Continuous when a boot-once override is refused, virtual media under the Manager or the System.
Every call retries transient failures (connection errors, 5xx) a few times with a short backoff."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import sushy
from sushy import auth as sushy_auth
from sushy import exceptions as sx

from aiorch.errors import NotFound

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

T = TypeVar("T")
_BACKOFF = (0.5, 1.0)  # seconds between the three tries of a transient failure
_TARGETS = {"pxe": sushy.BootSource.PXE, "disk": sushy.BootSource.HDD, "cd": sushy.BootSource.CD}
_EMULATOR = "Sushy Emulator"


class RedfishBmc:
    """One Redfish system: logs in on creation, so bad credentials or an unknown ID fail here."""

    def __init__(
        self, address: BmcAddress, username: str, password: str, *, timeout: float = 10.0
    ) -> None:
        self.address = address
        self._shown = address.display()
        self._root = self._call(
            lambda: sushy.Sushy(
                address.url + "/redfish/v1/",
                auth=sushy_auth.BasicAuth(username, password),
                server_side_retries=2,
                server_side_retries_delay=1,
                read_timeout=int(max(timeout, 1)),
                connect_timeout=timeout,
            )
        )
        self._system = self._call(lambda: self._root.get_system(address.system_path))
        maker = self._system.manufacturer or ""
        self.simulated: str | None = "sushy-tools fake" if maker == _EMULATOR else None

    def _call(self, fn: Callable[[], T]) -> T:
        """``fn`` with transient failures retried and sushy's errors turned into Bmc errors."""
        for attempt in range(len(_BACKOFF) + 1):
            try:
                return fn()
            except (sx.ConnectionError, sx.ServerSideError) as exc:
                if attempt == len(_BACKOFF):
                    reason = " ".join(str(exc).split())[:200]
                    raise BmcUnreachable(f"BMC {self._shown} is unreachable: {reason}") from None
                time.sleep(_BACKOFF[attempt])  # backoff between retries, not synchronisation
            except sx.AccessError as exc:
                raise BmcAuthFailed(
                    f"BMC {self._shown} refused the credentials (HTTP {exc.status_code})"
                ) from None
            except sx.ResourceNotFoundError:
                system_id = self.address.system_path.rsplit("/", 1)[-1]
                raise NotFound(f"BMC {self._shown} has no system {system_id}") from None
            except sx.SushyError as exc:
                raise BmcError(f"BMC {self._shown}: {' '.join(str(exc).split())[:200]}") from None
        raise AssertionError("unreachable")

    def _fresh(self) -> Any:
        self._call(self._system.refresh)
        return self._system

    def power_state(self) -> PowerState:
        state = self._fresh().power_state
        if state in (sushy.PowerState.ON, sushy.PowerState.POWERING_OFF):
            return "on"
        if state in (sushy.PowerState.OFF, sushy.PowerState.POWERING_ON):
            return "off"
        return "unknown"

    def power(self, action: PowerAction) -> None:
        if action == "off":
            self._call(lambda: self._system.reset_system(sushy.ResetType.FORCE_OFF))
        elif action == "cycle" and self.power_state() == "on":
            self._call(lambda: self._system.reset_system(sushy.ResetType.FORCE_RESTART))
        else:
            self._power_on()

    def _power_on(self) -> None:
        try:
            self._call(lambda: self._system.reset_system(sushy.ResetType.ON))
        except BmcError:
            self._call(lambda: self._system.reset_system(sushy.ResetType.FORCE_ON))

    def set_boot_once(self, device: BootDevice) -> None:
        target = _TARGETS[device]
        try:
            self._call(
                lambda: self._system.set_system_boot_options(
                    target, enabled=sushy.BootSourceOverrideEnabled.ONCE
                )
            )
        except BmcError:  # some BMCs refuse Once; Ironic falls back to Continuous
            self._call(
                lambda: self._system.set_system_boot_options(
                    target, enabled=sushy.BootSourceOverrideEnabled.CONTINUOUS
                )
            )

    def boot_override(self) -> dict[str, str]:
        boot = self._fresh().boot
        target, enabled = boot.target, boot.enabled
        return {
            "target": getattr(target, "value", str(target or "")),
            "enabled": getattr(enabled, "value", str(enabled or "")),
        }

    def insert_media(self, url: str) -> None:
        """Put ``url`` in the CD/DVD device (Manager first, then System), ejecting what is in."""
        device = self._cd_device()
        if device.inserted:
            self._call(device.eject_media)
            self._call(device.refresh)
        self._call(lambda: device.insert_media(url, inserted=True, write_protected=True))

    def _cd_device(self) -> Any:
        wanted = {sushy.VirtualMediaType.CD, sushy.VirtualMediaType.DVD}
        holders = [*self._call(lambda: self._system.managers), self._system]
        for holder in holders:
            try:
                devices = self._call(lambda: _media_of(holder))  # noqa: B023 - called at once
            except (BmcError, NotFound):
                continue
            for device in devices:
                if wanted & set(device.media_types or []):
                    return device
        raise BmcUnsupported(f"BMC {self._shown} has no virtual CD/DVD device")

    def inventory(self) -> dict[str, Any]:
        system = self._fresh()
        facts: dict[str, Any] = {
            "manufacturer": system.manufacturer,
            "model": system.model,
            "serial": system.serial_number,
            "uuid": system.uuid,
            "name": system.name,
            "cpus": _optional(lambda: system.processors.summary.count),
            "memory_gib": _optional(lambda: system.memory_summary.size_gib),
            "macs": _optional(
                lambda: [nic.mac_address for nic in system.ethernet_interfaces.get_members()]
            ),
        }
        return {k: v for k, v in facts.items() if v not in (None, "", [])}


def _media_of(holder: Any) -> list[Any]:
    return list(holder.virtual_media.get_members())


def _optional(fn: Callable[[], T]) -> T | None:
    """A sub-resource the BMC may not offer (the fake has no Processors): None when missing."""
    try:
        return fn()
    except (sx.SushyError, AttributeError):
        return None
