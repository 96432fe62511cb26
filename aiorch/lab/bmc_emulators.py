"""BMC emulators on loopback for tests and the lab: sushy-tools' fake Redfish driver as a
subprocess, and a pyghmi IPMI BMC server in a thread, so the drivers meet a real protocol.

sushy-emulator's fake driver (sushy_tools/emulator/resources/systems/fakedriver.py) keeps systems
from the ``SUSHY_EMULATOR_FAKE_SYSTEMS`` config list (uuid, name, power_state, nics[{mac}],
external_notifier). A power change becomes visible 1-11 s later (a random delay, applied when the
system is next read), and ``BootSourceOverrideEnabled`` always reads Continuous. With
``external_notifier: True`` on a system and ``EXTERNAL_NOTIFICATION_URL`` set, every change to the
system's stored record (power request, pending power applied, boot device, boot image) is sent as
``PUT <url>`` with ``Content-Type: application/json`` and the whole record as the body:
``{"uuid", "name", "power_state": "On"|"Off", "nics": [...], "external_notifier": true,
"pending_power": {"power_state", "apply_time"} | null, "boot_device"?, "boot_image"?}``.
A receiver should act on ``power_state`` (the applied state) and ignore repeats.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import bcrypt
import httpx

from aiorch.metal.bmc.ipmi import LAB_MANUFACTURER_ID, LAB_PRODUCT_ID
from aiorch.wait import wait_until


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FakeSystem:
    uuid: str
    name: str
    macs: list[str] = field(default_factory=list)
    power_state: str = "Off"


class SushyEmulator:
    """sushy-emulator --fake on 127.0.0.1:<free port> with HTTP basic auth (an htpasswd file)."""

    def __init__(
        self,
        workdir: Path,
        systems: list[FakeSystem],
        *,
        username: str = "admin",
        password: str = "lab-password",
        notifier_url: str | None = None,
    ) -> None:
        self.workdir, self.systems = workdir, systems
        self.username, self.password, self.notifier_url = username, password, notifier_url
        self.port = _free_port(socket.SOCK_STREAM)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        auth = self.workdir / "htpasswd"
        digest = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(4)).decode()
        auth.write_text(f"{self.username}:{digest}\n")
        systems = [
            {
                "uuid": s.uuid,
                "name": s.name,
                "power_state": s.power_state,
                "external_notifier": self.notifier_url is not None,
                "nics": [{"mac": mac} for mac in s.macs],
            }
            for s in self.systems
        ]
        conf = self.workdir / "sushy.conf"
        lines = [
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}",
            f"SUSHY_EMULATOR_AUTH_FILE = {str(auth)!r}",
            f"SUSHY_EMULATOR_STATE_DIR = {str(self.workdir / 'state')!r}",
        ]
        if self.notifier_url:
            lines.append(f"EXTERNAL_NOTIFICATION_URL = {self.notifier_url!r}")
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> SushyEmulator:
        conf = self._write_config()
        exe = Path(sys.executable).with_name("sushy-emulator")
        log = open(self.workdir / "sushy.log", "wb")  # noqa: SIM115 - the child holds it
        self._proc = subprocess.Popen(
            [str(exe), "--fake", "--config", str(conf), "-i", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self._answers, timeout=20, what=f"sushy-emulator on {self.base_url}")
        return self

    def _answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            tail = (self.workdir / "sushy.log").read_text()[-400:]
            raise RuntimeError(f"sushy-emulator exited ({self._proc.returncode}): {tail}")
        try:
            return httpx.get(f"{self.base_url}/redfish/v1/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def system_url(self, uuid: str) -> str:
        return f"redfish+http://127.0.0.1:{self.port}/redfish/v1/Systems/{uuid}"

    def system(self, uuid: str) -> dict[str, Any]:
        resp = httpx.get(
            f"{self.base_url}/redfish/v1/Systems/{uuid}",
            auth=(self.username, self.password),
            timeout=5,
        )
        resp.raise_for_status()
        return dict(resp.json())

    def reset(self, uuid: str, reset_type: str) -> None:
        """What a BMC's operator would do (On, ForceOff, ...); the lab's way to tell the fake
        driver that its machine went off by itself."""
        resp = httpx.post(
            f"{self.base_url}/redfish/v1/Systems/{uuid}/Actions/ComputerSystem.Reset",
            json={"ResetType": reset_type},
            auth=(self.username, self.password),
            timeout=5,
        )
        resp.raise_for_status()

    def __enter__(self) -> SushyEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Chassis(Protocol):
    def power_on(self) -> None: ...
    def power_off(self) -> None: ...
    def is_on(self) -> bool: ...
    def set_boot(self, device: str) -> None: ...


class MemoryChassis:
    """A chassis that only remembers: what IpmiBmc drives when nothing real is behind it."""

    def __init__(self) -> None:
        self.on = False
        self.boot = "default"

    def power_on(self) -> None:
        self.on = True

    def power_off(self) -> None:
        self.on = False

    def is_on(self) -> bool:
        return self.on

    def set_boot(self, device: str) -> None:
        self.boot = device


class IpmiBmc:
    """A pyghmi BMC server on 127.0.0.1:<free UDP port>, served by a daemon thread."""

    def __init__(self, *, username: str, password: str, chassis: Chassis | None = None) -> None:
        self.username, self.password = username, password
        self.chassis: Chassis = chassis or MemoryChassis()
        self.port = _free_port(socket.SOCK_DGRAM)
        self.address = f"ipmi://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: Any = None

    def start(self) -> IpmiBmc:
        from pyghmi.ipmi import bmc as pyghmi_bmc
        from pyghmi.ipmi.private import session as ipmisession

        chassis = self.chassis

        class _Server(pyghmi_bmc.Bmc):
            def get_power_state(self) -> str:
                return "on" if chassis.is_on() else "off"

            def power_on(self) -> None:
                chassis.power_on()

            def power_off(self) -> None:
                chassis.power_off()

            def power_cycle(self) -> None:
                chassis.power_off()
                chassis.power_on()

            def power_reset(self) -> None:
                self.power_cycle()

            def power_shutdown(self) -> None:
                chassis.power_off()

            def get_boot_device(self) -> str:
                return "default"

            def set_boot_device(self, bootdevice: str) -> None:
                chassis.set_boot(bootdevice)

        self._server = _Server({self.username: self.password}, port=self.port, address="127.0.0.1")
        # pyghmi packs the manufacturer in 4 bytes where IPMI has 3, so ipmitool reads the
        # product ID as (prodid & 0xFF) << 8: shift it so ipmitool shows LAB_PRODUCT_ID.
        self._server.mfgid, self._server.prodid = LAB_MANUFACTURER_ID, LAB_PRODUCT_ID >> 8

        def serve() -> None:
            while not self._stop.is_set():
                ipmisession.Session.wait_for_rsp(0.2)

        self._thread = threading.Thread(target=serve, name=f"ipmi-bmc-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        from pyghmi.ipmi.private import session as ipmisession

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._server is not None:
            ipmisession.Session.bmc_handlers.pop(self._server.serversocket, None)
            self._server.serversocket.close()
            self._server = None

    def __enter__(self) -> IpmiBmc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Chassis", "FakeSystem", "IpmiBmc", "MemoryChassis", "SushyEmulator"]
