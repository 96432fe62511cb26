"""No-BMC power control: the contract both sides read (every example in examples/agent), and
the agent's side of it against simulated UEFI firmware (efibootmgr's listing and a record of
the commands: tests/fixtures_power.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiorch.errors import InvalidInput
from aiorch.metal.bmc import parse_bmc
from edge_agent.contract.fields import ContractError
from edge_agent.contract.power import parse_outcome, parse_power
from edge_agent.power import PowerControl, choose_entry
from tests.fixtures_power import LISTING, Firmware

EXAMPLES = Path(__file__).parent.parent / "examples" / "agent"


def request(action: str = "reboot", boot_next: str | None = "pxe", rid: str = "5f0c9a1e7b3d2c40",
            mac: str | None = "52:54:00:00:00:07") -> dict[str, object]:  # fmt: skip
    body: dict[str, object] = {"id": rid, "action": action}
    if boot_next:
        body["boot_next"] = boot_next
    if mac:
        body["mac"] = mac
    return {"workloads": [], "power": body}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("power-*.json")), ids=lambda p: p.stem)
def test_every_power_example_reads_under_the_contract(path: Path) -> None:
    document = json.loads(path.read_text())
    if path.stem.startswith("power-request"):
        assert parse_power(document) is not None
    else:
        assert parse_outcome(document).id


@pytest.mark.parametrize(
    ("power", "field"),
    [
        ({"id": "5f0c9a1e7b3d2c40", "action": "halt"}, "power.action"),
        ({"id": "5f0c9a1e7b3d2c40", "action": "reboot", "boot_next": "cd"}, "power.boot_next"),
        ({"id": "x; reboot", "action": "reboot"}, "power.id"),
        ({"id": "5f0c9a1e7b3d2c40\n", "action": "reboot"}, "power.id"),
        ({"id": "5f0c9a1e7b3d2c40", "action": "reboot", "mac": "52:54"}, "power.mac"),
        ("reboot", "power"),
    ],
)
def test_a_bad_power_request_is_refused_naming_its_field(power: object, field: str) -> None:
    with pytest.raises(ContractError) as caught:
        parse_power({"power": power})
    assert caught.value.field == field


def test_the_pxe_entry_is_the_boot_nics_and_disk_is_the_one_booted_now() -> None:
    assert choose_entry(LISTING, "pxe", "52:54:00:00:00:01").number == "0003"
    # Unknown MAC: the first network entry in boot order; inactive entries never count.
    assert choose_entry(LISTING, "pxe", "52:54:00:00:00:99").number == "0003"
    assert choose_entry(LISTING, "disk", None).number == "0001"


def test_a_reboot_to_pxe_sets_bootnext_saves_its_outcome_then_reboots_once(
    tmp_path: Path,
) -> None:
    firmware = Firmware()
    control = PowerControl(tmp_path, run=firmware)
    control.apply(request())
    assert firmware.commands == [
        ["efibootmgr", "-v"],
        ["efibootmgr", "--bootnext", "0002"],
        ["systemctl", "reboot"],
    ]
    report = control.report()
    assert report is not None and report["ok"] and "Boot0002" in report["message"]
    # The agent after the reboot: the same request is done, and its outcome is reported.
    again = Firmware()
    after = PowerControl(tmp_path, run=again)
    after.apply(request())
    assert again.commands == [] and after.report() == report


def test_a_poweroff_uses_the_firmware_order(tmp_path: Path) -> None:
    firmware = Firmware()
    PowerControl(tmp_path, run=firmware).apply(request("poweroff", None, mac=None))
    assert firmware.commands == [["systemctl", "poweroff"]]


@pytest.mark.parametrize(
    ("firmware", "words"),
    [
        (Firmware(listing=None), "efibootmgr is not installed"),
        (Firmware(fail="efibootmgr -v"), "not booted by UEFI?"),
        (Firmware(listing="BootOrder: 0001\nBoot0001* debian\tHD(1)\n"), "no network boot entry"),
        (Firmware(fail="efibootmgr --bootnext"), "--bootnext 0002 failed"),
    ],
    ids=["no-efibootmgr", "not-uefi", "no-pxe-entry", "bootnext-refused"],
)
def test_no_next_boot_means_no_reboot_and_says_why(
    tmp_path: Path, firmware: Firmware, words: str
) -> None:
    control = PowerControl(tmp_path, run=firmware)
    control.apply(request())
    report = control.report()
    assert report is not None and not report["ok"] and words in report["message"]
    assert ["systemctl", "reboot"] not in firmware.commands


def test_a_failed_reboot_command_is_reported(tmp_path: Path) -> None:
    control = PowerControl(tmp_path, run=Firmware(fail="systemctl reboot"))
    control.apply(request(boot_next=None))
    report = control.report()
    assert report is not None and not report["ok"]
    assert "systemctl reboot failed: EFI variables" in report["message"]


def test_a_bad_request_does_nothing(tmp_path: Path) -> None:
    firmware = Firmware()
    control = PowerControl(tmp_path, run=firmware)
    control.apply(request(action="halt"))
    assert firmware.commands == [] and control.report() is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("agent://edge-7:22", "agent://HOST"),
        ("agent://edge-7/x", "agent://HOST"),
    ],
)
def test_an_agent_address_is_a_host_name_only(text: str, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        parse_bmc(text)


def test_an_agent_address_keeps_the_host_names_case() -> None:
    address = parse_bmc("agent://Edge-7")
    assert (address.scheme, address.host, address.display()) == (
        "agent",
        "Edge-7",
        "agent://Edge-7",
    )


class Channel:
    """The hub's side as the driver sees it: the agent's liveness, and what was asked."""

    def __init__(self, state: str) -> None:
        self.state, self.asked, self.next = state, [], None

    def power_state(self, host: str) -> str:
        return self.state

    def request(self, host: str, action: str) -> None:
        self.asked.append((host, action, self.next))

    def set_boot_next(self, host: str, device: str) -> None:
        self.next = device

    def boot_next(self, host: str) -> str | None:
        return self.next


def test_the_agent_driver_reboots_a_running_machine_and_refuses_what_needs_a_bmc() -> None:
    from aiorch.metal.bmc import BmcUnsupported, connect

    online = Channel("on")
    driver = connect(parse_bmc("agent://edge-7"), "", "", channel=online)
    driver.set_boot_once("pxe")
    assert driver.boot_override() == {"target": "pxe", "enabled": "Once"}
    driver.power("cycle")
    driver.power("on")  # on already: nothing
    assert online.asked == [("edge-7", "reboot", "pxe")]
    for refused in (lambda: driver.set_boot_once("cd"), lambda: driver.insert_media("http://x")):
        with pytest.raises(BmcUnsupported, match="has no BMC"):
            refused()
    offline = connect(parse_bmc("agent://edge-7"), "", "", channel=Channel("unknown"))
    with pytest.raises(BmcUnsupported, match="power the machine on by hand"):
        offline.power("on")
    offline.power("off")  # asked anyway: an agent that comes back acts on it
