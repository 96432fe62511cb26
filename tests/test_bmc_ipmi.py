"""The IPMI driver (ipmitool) against the lab's pyghmi BMC on loopback."""

import shutil
from collections.abc import Iterator

import pytest

from aiorch.lab.bmc_emulators import IpmiBmc, MemoryChassis
from aiorch.metal.bmc import BmcAuthFailed, BmcUnsupported, connect, parse_bmc
from aiorch.metal.bmc.ipmi import IpmiBmc as IpmiDriver

pytestmark = pytest.mark.skipif(
    shutil.which("ipmitool") is None, reason="ipmitool is not installed"
)
PASSWORD = "s3cret-ipmi"


@pytest.fixture(
    scope="module"
)  # pyghmi keeps its sockets in class-level state: one server per module
def emulator() -> Iterator[IpmiBmc]:
    with IpmiBmc(username="admin", password=PASSWORD) as emu:
        yield emu


def test_power_on_off_and_status(emulator: IpmiBmc) -> None:
    bmc = connect(parse_bmc(emulator.address), "admin", PASSWORD, timeout=5)
    assert bmc.power_state() == "off"
    bmc.power("on")
    assert bmc.power_state() == "on" and emulator.chassis.is_on()
    bmc.power("off")
    assert bmc.power_state() == "off"
    bmc.power("cycle")  # off: a cycle powers it on
    assert bmc.power_state() == "on"


def test_boot_once_pxe_reaches_the_chassis(emulator: IpmiBmc) -> None:
    bmc = connect(parse_bmc(emulator.address), "admin", PASSWORD, timeout=5)
    bmc.set_boot_once("pxe")
    assert isinstance(emulator.chassis, MemoryChassis) and emulator.chassis.boot == "network"


def test_the_lab_emulator_is_recognised(emulator: IpmiBmc) -> None:
    assert connect(parse_bmc(emulator.address), "admin", PASSWORD).simulated == "pyghmi-bmc"


def test_a_wrong_password_is_a_one_line_auth_error(emulator: IpmiBmc) -> None:
    with pytest.raises(BmcAuthFailed) as err:
        connect(parse_bmc(emulator.address), "admin", "not-it", timeout=5).power_state()
    assert "refused the credentials" in str(err.value) and "\n" not in str(err.value)
    assert "not-it" not in str(err.value)


def test_the_password_is_never_in_ipmitool_argv() -> None:
    driver = IpmiDriver(parse_bmc("ipmi://127.0.0.1:6230"), "admin", PASSWORD)
    argv = driver.command("chassis", "power", "status")
    assert PASSWORD not in " ".join(argv) and "-E" in argv and "-P" not in argv


def test_ipmi_has_no_virtual_media() -> None:
    with pytest.raises(BmcUnsupported):
        connect(parse_bmc("ipmi://127.0.0.1:6230"), "admin", PASSWORD).insert_media(
            "http://127.0.0.1/x.iso"
        )
