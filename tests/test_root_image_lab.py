"""The root image built for real (mmdebstrap from a site repository the repo code made from
the Debian mirror, cached under .data/image-cache) and checked without mounting it: the GPT
disk and its partitions, the root's files read with debugfs. Then it boots, with BIOS and
with UEFI firmware: QEMU TCG from the disk, slirp with `restrict=on` (the VM reaches
nothing), to a login prompt on the serial console, and root logs in over SSH with the key a
seed put there (the seed step stands in for the ramdisk's, written with debugfs). Under UEFI
the agent's no-BMC power driver picks the network entry from the real firmware's list and
sets it as the next boot, and the firmware boots it."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from aiorch.hub.process import free_port
from aiorch.lab.metal import qemu_argv
from aiorch.metal import image_root
from aiorch.metal.image import (
    ESP_PARTITION,
    ESP_TYPE,
    ROOT_PARTITION,
    SEED_AUTHORIZED_KEYS,
    SEED_HOSTNAME,
    ImageFiles,
    build_image,
)
from aiorch.wait import wait_until
from edge_agent.digest import sha256_file
from tests.fixtures_image import cached_image, image_repo, unpack_image

pytestmark = pytest.mark.lab
SECTOR = 512
MIB = 1 << 20


@pytest.fixture(scope="module")
def built() -> ImageFiles:
    return cached_image()


@pytest.fixture
def raw(built: ImageFiles, tmp_path: Path) -> Path:
    """A fresh copy of the disk for each test: a boot changes it (host keys, machine id)."""
    return unpack_image(built.image, tmp_path / "disk.raw")


def _table(raw: Path) -> dict[str, Any]:
    proc = subprocess.run(["sfdisk", "-J", str(raw)], capture_output=True, check=True)
    table = json.loads(proc.stdout)["partitiontable"]
    assert isinstance(table, dict)
    return table


def _probe(raw: Path, start: int) -> list[str]:
    """blkid's KEY=value lines for the file system at sector ``start`` of the disk file."""
    probe = ["blkid", "-p", "-O", str(start * SECTOR), "-o", "export", str(raw)]
    return subprocess.run(probe, capture_output=True, text=True, check=True).stdout.splitlines()


def _root(raw: Path) -> str:
    """The root partition as e2fsprogs opens it: the disk file at the partition's offset."""
    start = _table(raw)["partitions"][ROOT_PARTITION - 1]["start"]
    return f"{raw}?offset={start * SECTOR}"


def debugfs(raw: Path, *commands: str, write: bool = False) -> str:
    argv = ["debugfs", *(["-w"] if write else []), "-f", "-", _root(raw)]
    proc = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_image_is_a_gpt_disk_grub_boots_by_bios_and_uefi_with_the_configured_root(built, raw):
    manifest = json.loads(built.manifest.read_text())
    assert sha256_file(built.image) == built.sha256 == manifest["sha256"]
    assert raw.stat().st_size == built.raw_size_bytes == manifest["raw_size_bytes"]
    header = built.image.read_bytes()[:10]
    assert header[3] & 0x08 == 0 and header[4:8] == b"\0\0\0\0"  # gzip -n: no name, no time
    with gzip.open(built.image) as f:
        mbr = f.read(2 * SECTOR)
    assert mbr[510:512] == b"\x55\xaa" and b"GRUB" in mbr[:440]  # grub's BIOS boot code
    assert mbr[450] == 0xEE and mbr[512:520] == b"EFI PART"  # protective MBR, then GPT

    table = _table(raw)
    parts = table["partitions"]
    assert table["label"] == "gpt" and len(parts) == 3 and manifest["root_partition"] == 3
    assert parts[0]["start"] == 2048 and parts[0]["size"] == 2048  # BIOS boot: grub's core
    assert parts[ESP_PARTITION - 1]["type"] == ESP_TYPE
    part = parts[ROOT_PARTITION - 1]
    # The root runs to the end: sfdisk ends it on a MiB, before the backup GPT.
    assert 0 <= table["lastlba"] - (part["start"] + part["size"] - 1) < MIB // SECTOR

    esp = parts[ESP_PARTITION - 1]
    esp_uuid = image_root.DiskIds(manifest["root_uuid"], manifest["esp_id"]).esp_uuid
    assert {"TYPE=vfat", f"UUID={esp_uuid}"} <= set(_probe(raw, esp["start"]))
    with raw.open("rb") as f:
        f.seek(esp["start"] * SECTOR)
        fat = f.read(esp["size"] * SECTOR)
    assert b"BOOTX64 EFI" in fat  # a FAT directory entry: EFI/BOOT/BOOTX64.EFI, the removable path
    uuid = manifest["root_uuid"]
    assert {"TYPE=ext4", f"UUID={uuid}"} <= set(_probe(raw, part["start"]))
    kernel = manifest["kernel_version"]
    files = debugfs(raw, "cat /etc/fstab", "cat /boot/grub/grub.cfg")
    assert f"UUID={uuid} / ext4" in files and " /boot/efi vfat " in files
    assert f"linux /boot/vmlinuz-{kernel} root=UUID={uuid} ro" in files
    for name in ("udev", "grub-pc", "grub-efi-amd64-bin", "efibootmgr", "systemd-sysv",
                 "openssh-server", "python3", "bash", "apt"):  # fmt: skip
        assert name in manifest["packages"], name

    wants = ("multi-user.target", "ssh.service", "getty.target")
    listing = debugfs(raw, "ls -l /opt/aiorch-agent/bin", "ls /etc/ssh",
                      *(f"ls /etc/systemd/system/{w}.wants" for w in wants))  # fmt: skip
    assert "aiorch-agent" in listing
    assert image_root.FIRSTBOOT_UNIT in listing and image_root.HOSTKEYS_UNIT in listing
    assert "serial-getty@ttyS0.service" in listing
    assert "systemd-networkd.service" in listing
    assert "ssh_host_" not in listing  # each machine makes its own
    units = debugfs(raw, f"cat /etc/systemd/system/{image_root.AGENT_UNIT}")
    assert image_root.agent_unit() in units
    shadow = debugfs(raw, "cat /etc/shadow")
    assert next(ln for ln in shadow.splitlines() if ln.startswith("root:")).split(":")[1] == "!"

    stamp = built.image.stat().st_mtime_ns  # unchanged inputs: the build is reused
    again = build_image(image_repo(), built.image.parent)
    assert again == built and built.image.stat().st_mtime_ns == stamp


def _seed(raw: Path, work: Path, hostname: str) -> Path:
    """What the ramdisk writes after the image (here with debugfs): a hostname and root's SSH
    key. Returns the private key."""
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (work / "hostname").write_text(hostname + "\n")
    pub = work / "authorized_keys"
    pub.write_bytes(key.with_suffix(".pub").read_bytes())
    pub.chmod(0o600)
    debugfs(raw, f"rm {SEED_HOSTNAME}", f"write {work / 'hostname'} {SEED_HOSTNAME}",
            f"write {pub} {SEED_AUTHORIZED_KEYS}", write=True)  # fmt: skip
    return key


MAC = "52:54:00:1a:b0:01"
# The agent's no-BMC power driver, as the desired state's request drives it: the next boot
# set to the network with efibootmgr, then a reboot (the outcome is kept across it).
POWER_REQUEST = f"""/opt/aiorch-agent/bin/python - <<'PY'
from pathlib import Path
from edge_agent.power import PowerControl
control = PowerControl(Path("/root"))
request = {{"id": "1ab0000000000001", "action": "reboot", "boot_next": "pxe", "mac": "{MAC}"}}
control.apply({{"power": request}})
print(control.report())
PY"""
FACTS = (
    "hostname; ip -4 -o addr show scope global; ls /etc/ssh/ssh_host_ed25519_key; "
    "systemctl show -P ConditionResult aiorch-firstboot.service; "
    "systemctl is-enabled aiorch-agent.service; "
    "/opt/aiorch-agent/bin/aiorch-agent --version; "
    "test -d /sys/firmware/efi && echo uefi || echo bios; findmnt -no FSTYPE /boot/efi"
)


class ImageVm:
    """The disk booted in QEMU on slirp, its SSH port forwarded from loopback."""

    def __init__(self, raw: Path, work: Path, key: Path, uefi: bool) -> None:
        self.console, self.port = work / "console.log", free_port()
        nvram = work / "nvram.fd" if uefi else None
        nic_boot = ",bootindex=3" if uefi else ""  # OVMF offers only what has a boot index
        argv = [*qemu_argv("LAB-IMAGE", [raw], self.console, reboots=uefi, nvram=nvram),
                *([] if uefi else ["-boot", "c"]),
                "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", f"virtio-net-pci,netdev=n0,mac={MAC}{nic_boot}"]  # fmt: skip
        self.ssh = ["ssh", "-i", str(key), "-p", str(self.port), "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "ConnectTimeout=10", "root@127.0.0.1"]  # fmt: skip
        self.qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def wait_login(self, hostname: str, count: int = 1) -> None:
        def login() -> bool:
            assert self.qemu.poll() is None, self.text()[-3000:]
            return self.text().count(f"{hostname} login:") >= count

        wait_until(login, timeout=600, what="a login prompt on the serial console", interval=1)

    def run(self, script: str) -> str:
        def logged_in() -> str | None:
            proc = subprocess.run([*self.ssh, script], capture_output=True, text=True,
                                  timeout=60)  # fmt: skip
            return proc.stdout if proc.returncode != 255 and proc.stdout else None

        out = wait_until(logged_in, timeout=120, what="root's SSH login", interval=2)
        assert isinstance(out, str)
        return out

    def stop(self) -> None:
        self.qemu.kill()
        self.qemu.wait()


@pytest.mark.parametrize("firmware", ["bios", "uefi"])
def test_the_image_boots_to_a_login_and_root_logs_in_with_the_seeded_key(raw, tmp_path, firmware):
    key = _seed(raw, tmp_path, "lab-image-1")
    started = time.monotonic()
    vm = ImageVm(raw, tmp_path, key, uefi=firmware == "uefi")
    try:
        vm.wait_login("lab-image-1")
        booted = time.monotonic() - started
        lines = vm.run(FACTS).splitlines()
        assert lines[0] == "lab-image-1"  # the seed's hostname
        assert "inet 10.0.2.15/24" in lines[1]  # networkd's DHCP lease from slirp
        assert lines[2] == "/etc/ssh/ssh_host_ed25519_key"  # made on this machine
        assert lines[3:5] == ["no", "disabled"]  # no token seeded: no first boot, no agent yet
        assert lines[5].strip()  # the agent's venv runs
        assert lines[6:] == [firmware, "vfat"]  # booted by that firmware; the ESP at /boot/efi
        print(f"{firmware} boot to login in TCG: {booted:.1f} s")
        if firmware == "bios":
            return
        mark = len(vm.text())
        asked = subprocess.run([*vm.ssh, POWER_REQUEST], capture_output=True, text=True,
                               timeout=120)  # fmt: skip
        # Its outcome, unless the reboot took the session first; never none or a failure.
        said = asked.stdout.strip()
        assert said != "None" and "'ok': False" not in said, said + asked.stderr
        vm.wait_login("lab-image-1", count=2)  # the network boot found nothing: back to disk
        outcome = json.loads(vm.run("cat /root/power.json"))
        after = vm.text()[mark:]
    finally:
        vm.stop()
    assert outcome["ok"] is True and outcome["id"] == "1ab0000000000001", outcome
    number = outcome["message"].split("Boot", 1)[1][:4]
    assert "next boot pxe" in outcome["message"] and MAC.replace(":", "").upper() in (
        outcome["message"].upper().replace(":", "")
    ), outcome
    # The firmware's first try after the reboot is that entry (slirp serves no boot file, so
    # it fails and the boot order's disk follows).
    tries = re.findall(r"BdsDxe: (?:failed to load|loading) Boot([0-9A-F]{4})", after)
    assert tries[:1] == [number], after[-3000:]
