"""The boot listener (`hub serve --boot-listen`): what a PXE-booting machine is told from its
state, the ramdisk's files, and nothing else on that plain-HTTP socket."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiorch.hub.process import BIN
from aiorch.lab.bmc_emulators import SushyEmulator
from aiorch.wait import wait_until
from tests.fixtures_machines import enroll, inventory, mac
from tests.fixtures_metal import MetalHub

pytestmark = pytest.mark.e2e
KERNEL = b"simulated kernel\n"


@pytest.fixture(scope="module")
def boot_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetalHub]:
    ramdisk = tmp_path_factory.mktemp("ramdisk")
    (ramdisk / "vmlinuz").write_bytes(KERNEL)
    (ramdisk / "initrd.gz").write_bytes(b"userland")
    (ramdisk / "zz-ca.gz").write_bytes(b"ca")
    hub = MetalHub(tmp_path_factory.mktemp("boothub"), ramdisk_dir=ramdisk).start()
    yield hub
    hub.stop()


def test_an_inspecting_machine_gets_the_ramdisk_with_its_live_boot_token(
    boot_hub: MetalHub, emulator: SushyEmulator, creds: Path
) -> None:
    enroll(boot_hub, emulator, creds, 1, "pxe1")
    before = boot_hub.boot(f"/boot/{mac(1)}.ipxe")
    assert "nothing to boot" in before.text and before.text.endswith("exit 1\n")
    boot_hub.cli("machines", "inspect", "pxe1")
    script = boot_hub.boot(f"/boot/{mac(1).upper().replace(':', '-')}.ipxe")
    assert script.status_code == 200 and script.text.startswith("#!ipxe\n")
    assert script.headers["cache-control"] == "no-store"
    kernel_line = next(line for line in script.text.splitlines() if line.startswith("kernel "))
    assert kernel_line.startswith(f"kernel {boot_hub.boot_url}/boot/files/vmlinuz console=ttyS0 ")
    words = dict(w.split("=", 1) for w in kernel_line.split()[2:] if "=" in w)
    assert " quiet " in kernel_line  # no token on the console
    assert words["aiorch.hub"] == boot_hub.lab_url and words["aiorch.mac"] == mac(1)
    assert "initrd=initrd.gz initrd=zz-ca.gz" in kernel_line  # the userland, then the CA
    assert f"initrd --name zz-ca.gz {boot_hub.boot_url}/boot/files/zz-ca.gz" in script.text
    # The token in the script is the one the ramdisk API takes for this machine right now.
    with boot_hub.client(words["aiorch.token"]) as ramdisk:
        answer = ramdisk.post("/ramdisk/inventory", json=inventory(1))
    assert answer.status_code == 200 and answer.json()["kind"] == "burn_in"
    assert boot_hub.cli_json("machines", "show", "pxe1")["state"] == "burning_in"
    again = boot_hub.boot(f"/boot/{mac(1)}.ipxe").text  # a reboot mid-step: same step, same token
    assert f"aiorch.token={words['aiorch.token']} " in again


def test_the_ramdisk_files_and_nothing_else_are_served(boot_hub: MetalHub) -> None:
    kernel = boot_hub.boot("/boot/files/vmlinuz")
    assert kernel.status_code == 200 and kernel.content == KERNEL
    for path in ("/boot/files/hub.log", "/boot/files/..%2fvmlinuz", "/boot/files/.."):
        assert boot_hub.boot(path).status_code == 404, path
    for path in ("/healthz", "/api/v1/machines", "/repo/", "/docs", "/openapi.json"):
        assert boot_hub.boot(path).status_code == 404, path  # the API is on its own socket
    chain = boot_hub.boot("/boot/chain.ipxe").text
    assert chain == f"#!ipxe\nchain {boot_hub.boot_url}/boot/${{mac}}.ipxe\n"


def test_unknown_and_bad_macs_and_hosts(boot_hub: MetalHub) -> None:
    unknown = boot_hub.boot("/boot/02:00:00:00:00:99.ipxe")
    assert unknown.status_code == 200 and "is not an enrolled machine" in unknown.text
    assert "exit 1" in unknown.text and "kernel" not in unknown.text
    bad = boot_hub.boot("/boot/not-a-mac.ipxe")
    assert bad.status_code == 422 and "not a MAC address" in bad.json()["detail"]
    forged = boot_hub.boot("/boot/chain.ipxe", headers={"Host": "evil;shell"})
    assert forged.status_code == 422 and "not a host and port" in forged.json()["detail"]


def test_a_hub_without_a_ramdisk_boots_nothing_and_says_why(
    tmp_path: Path, emulator: SushyEmulator, creds: Path
) -> None:
    hub = MetalHub(tmp_path / "hub").start()
    try:
        enroll(hub, emulator, creds, 2, "pxe2")
        hub.cli("machines", "inspect", "pxe2")
        script = hub.boot(f"/boot/{mac(2)}.ipxe").text
        assert "the hub serves no ramdisk" in script and "kernel" not in script
        assert hub.boot("/boot/files/vmlinuz").status_code == 404
    finally:
        hub.stop()


def test_the_hub_runs_its_proxy_dhcp_beside_the_boot_listener_and_stops_it(
    tmp_path: Path,
) -> None:
    """`--boot-dhcp lo=127.0.0.0/8`: dnsmasq in proxy mode on loopback (it sends nothing)."""
    hub = MetalHub(tmp_path / "hub")
    hub.serve_args += ["--boot-dhcp", "lo=127.0.0.0/8"]
    hub.start()
    try:
        found = _dnsmasq_for(hub.boot_url)
        assert len(found) == 1, found
        conf = Path(found[0].split("--conf-file=")[1].split()[0]).read_text()
        assert "dhcp-range=127.0.0.0,proxy,255.0.0.0" in conf and "interface=lo" in conf
        assert f"{hub.boot_url}/boot/chain.ipxe" in conf
    finally:
        hub.stop()
    wait_until(lambda: _dnsmasq_for(hub.boot_url) == [], timeout=15, what="dnsmasq stopped")


def _dnsmasq_for(boot_url: str) -> list[str]:
    """The command lines of running dnsmasq processes whose config names this listener."""
    found = []
    for proc in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = proc.read_bytes().decode().split("\0")
        except OSError:
            continue
        conf = next((a[12:] for a in argv if a.startswith("--conf-file=")), None)
        if not argv[0].endswith("dnsmasq") or conf is None:
            continue
        try:  # another test's dnsmasq (the lab's) may be gone with its files meanwhile
            text = Path(conf).read_text()
        except OSError:
            continue
        if boot_url in text:
            found.append(" ".join(argv))
    return found


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--boot-dhcp", "lo=127.0.0.0/8"], "--boot-dhcp needs --boot-listen"),
        (["--boot-listen", "127.0.0.1:1", "--boot-dhcp", "lo"], "wants INTERFACE=SUBNET"),
        (["--boot-listen", "127.0.0.1:1", "--boot-dhcp", "lo=127.0.0.1/8"], "not a subnet"),
        (["--boot-listen", "nowhere"], "--boot-listen wants ADDRESS:PORT"),
    ],
)
def test_bad_boot_options_are_one_line_errors(tmp_path: Path, args: list[str], words: str) -> None:
    result = subprocess.run(
        [str(BIN / "aiorch"), "hub", "serve", "--data-dir", str(tmp_path / "hub"), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
