"""The Redfish driver (sushy) against sushy-tools' fake emulator on loopback, with basic auth.

The fake applies power changes 1-11 s late, so these tests wait on PowerState with a deadline."""

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiorch.errors import NotFound
from aiorch.lab.bmc_emulators import FakeSystem, SushyEmulator
from aiorch.metal.bmc import Bmc, BmcAuthFailed, BmcUnreachable, connect, parse_bmc
from aiorch.wait import wait_until

pytestmark = pytest.mark.e2e
UUID = "27946b59-9e44-4fa7-8e91-f3527a1ef094"
MAC = "52:54:00:12:34:56"
PASSWORD = "rf-secret"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SushyEmulator]:
    with SushyEmulator(
        tmp_path_factory.mktemp("sushy"), [FakeSystem(UUID, "node1", [MAC])], password=PASSWORD
    ) as emu:
        yield emu


@pytest.fixture
def bmc(emulator: SushyEmulator) -> Bmc:
    return connect(parse_bmc(emulator.system_url(UUID)), "admin", PASSWORD)


def _wait_power(bmc: Bmc, state: str) -> None:
    wait_until(
        lambda: bmc.power_state() == state, timeout=20, what=f"PowerState {state}", interval=0.2
    )


def test_enroll_sequence_boots_once_from_pxe_and_powers_on(
    bmc: Bmc, emulator: SushyEmulator
) -> None:
    started = time.monotonic()
    bmc.set_boot_once("pxe")
    bmc.power("on")
    _wait_power(bmc, "on")
    print(f"enroll-style sequence took {time.monotonic() - started:.1f}s")
    assert emulator.system(UUID)["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    # the fake only knows Continuous; the driver reports what the BMC says
    assert bmc.boot_override() == {"target": "Pxe", "enabled": "Continuous"}


def test_power_cycle_and_off(bmc: Bmc, emulator: SushyEmulator) -> None:
    if bmc.power_state() != "on":
        bmc.power("on")
        _wait_power(bmc, "on")
    bmc.power("cycle")  # ForceRestart: the fake reads Off at once, then On
    _wait_power(bmc, "on")
    bmc.power("off")
    _wait_power(bmc, "off")
    assert emulator.system(UUID)["PowerState"] == "Off"


def test_insert_media_loads_a_served_image(
    bmc: Bmc, emulator: SushyEmulator, tmp_path: Path
) -> None:
    (tmp_path / "boot.iso").write_bytes(b"iso" * 1000)
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/boot.iso"
        bmc.insert_media(url)
        bmc.insert_media(url)  # something is inserted: ejected first, then inserted again
    finally:
        server.shutdown()
        server.server_close()
    cd = httpx.get(
        f"{emulator.base_url}/redfish/v1/Systems/{UUID}/VirtualMedia/Cd", auth=("admin", PASSWORD)
    )
    managers = httpx.get(
        f"{emulator.base_url}/redfish/v1/Managers", auth=("admin", PASSWORD)
    ).json()
    media = [cd.json()] if cd.status_code == 200 else []
    for member in managers["Members"]:
        got = httpx.get(
            f"{emulator.base_url}{member['@odata.id']}/VirtualMedia/Cd", auth=("admin", PASSWORD)
        )
        if got.status_code == 200:
            media.append(got.json())
    assert any(m.get("Image") == url and m.get("Inserted") for m in media)


def test_inventory_and_simulated(bmc: Bmc) -> None:
    facts = bmc.inventory()
    assert (
        facts["uuid"] == UUID and facts["manufacturer"] == "Sushy Emulator" and MAC in facts["macs"]
    )
    assert bmc.simulated == "sushy-tools fake"


def test_a_wrong_password_is_a_one_line_auth_error(emulator: SushyEmulator) -> None:
    with pytest.raises(BmcAuthFailed) as err:
        connect(parse_bmc(emulator.system_url(UUID)), "admin", "not-it")
    assert str(err.value).endswith("refused the credentials (HTTP 401)") and "not-it" not in str(
        err.value
    )


def test_an_unknown_system_is_not_found(emulator: SushyEmulator) -> None:
    with pytest.raises(NotFound, match="has no system nope"):
        connect(parse_bmc(emulator.system_url("nope")), "admin", PASSWORD)


def test_a_closed_port_is_unreachable(emulator: SushyEmulator) -> None:
    with pytest.raises(BmcUnreachable, match="is unreachable"):
        connect(
            parse_bmc("redfish+http://127.0.0.1:1/redfish/v1/Systems/x"),
            "admin",
            PASSWORD,
            timeout=2,
        )
