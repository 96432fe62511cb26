"""The root image built for real (mmdebstrap from a site repository the repo code made from
the Debian mirror, cached under .data/image-cache) and checked without mounting it: the MBR
and partition, the root's files read with debugfs. Then it boots: QEMU TCG from the disk,
slirp with `restrict=on` (the VM reaches nothing), to a login prompt on the serial console,
and root logs in over SSH with the key a seed put there (the seed step stands in for the
ramdisk's, written with debugfs)."""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from pathlib import Path

import pytest

from aiorch.hub.process import free_port
from aiorch.lab.metal import qemu_argv
from aiorch.metal import image_root
from aiorch.metal.image import (
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


@pytest.fixture(scope="module")
def built() -> ImageFiles:
    return cached_image()


@pytest.fixture(scope="module")
def raw(built: ImageFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack_image(built.image, tmp_path_factory.mktemp("image") / "disk.raw")


def _root(raw: Path) -> str:
    """Partition 1 as e2fsprogs opens it: the disk file at the partition's offset."""
    table = json.loads(subprocess.run(["sfdisk", "-J", str(raw)], capture_output=True,
                                      check=True).stdout)  # fmt: skip
    start = table["partitiontable"]["partitions"][ROOT_PARTITION - 1]["start"]
    return f"{raw}?offset={start * SECTOR}"


def debugfs(raw: Path, *commands: str, write: bool = False) -> str:
    argv = ["debugfs", *(["-w"] if write else []), "-f", "-", _root(raw)]
    proc = subprocess.run(argv, input="\n".join(commands) + "\n", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_image_is_an_mbr_disk_grub_boots_with_the_configured_root(built, raw):
    manifest = json.loads(built.manifest.read_text())
    assert sha256_file(built.image) == built.sha256 == manifest["sha256"]
    assert raw.stat().st_size == built.raw_size_bytes == manifest["raw_size_bytes"]
    header = built.image.read_bytes()[:10]
    assert header[3] & 0x08 == 0 and header[4:8] == b"\0\0\0\0"  # gzip -n: no name, no time
    with gzip.open(built.image) as f:
        mbr = f.read(SECTOR)
    assert mbr[510:] == b"\x55\xaa" and b"GRUB" in mbr[:440]  # grub's boot code in the MBR

    parts = json.loads(subprocess.run(["sfdisk", "-J", str(raw)], capture_output=True,
                                      check=True).stdout)["partitiontable"]  # fmt: skip
    assert parts["label"] == "dos" and len(parts["partitions"]) == 1
    part = parts["partitions"][0]
    assert part["start"] == 2048 and part["type"] == "83"  # 1 MiB in, Linux
    assert (part["start"] + part["size"]) * SECTOR == built.raw_size_bytes  # to the end

    uuid = manifest["root_uuid"]
    probe = ["blkid", "-p", "-O", str(part["start"] * SECTOR), "-o", "export", str(raw)]
    blkid = subprocess.run(probe, capture_output=True, text=True, check=True).stdout
    assert f"UUID={uuid}" in blkid.splitlines() and "TYPE=ext4" in blkid.splitlines()
    kernel = manifest["kernel_version"]
    files = debugfs(raw, "cat /etc/fstab", "cat /boot/grub/grub.cfg")
    assert f"UUID={uuid} / ext4" in files
    assert f"linux /boot/vmlinuz-{kernel} root=UUID={uuid} ro" in files
    for name in ("udev", "grub-pc", "systemd-sysv", "openssh-server", "python3", "bash", "apt"):
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


def test_the_image_boots_to_a_login_and_root_logs_in_with_the_seeded_key(raw, tmp_path):
    key = _seed(raw, tmp_path, "lab-image-1")
    console, port = tmp_path / "console.log", free_port()
    argv = [*qemu_argv("LAB-IMAGE", [raw], console), "-boot", "c",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", "virtio-net-pci,netdev=n0"]  # fmt: skip
    started = time.monotonic()
    qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:

        def login() -> bool:
            assert qemu.poll() is None, console.read_text(errors="replace")[-3000:]
            return console.exists() and "lab-image-1 login:" in console.read_text(errors="replace")

        wait_until(login, timeout=600, what="a login prompt on the serial console", interval=1)
        booted = time.monotonic() - started
        ssh = ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ConnectTimeout=10", "root@127.0.0.1"]  # fmt: skip
        script = (
            "hostname; ip -4 -o addr show scope global; ls /etc/ssh/ssh_host_ed25519_key; "
            "systemctl show -P ConditionResult aiorch-firstboot.service; "
            "systemctl is-enabled aiorch-agent.service; "
            "/opt/aiorch-agent/bin/aiorch-agent --version"
        )

        def logged_in() -> str | None:
            proc = subprocess.run([*ssh, script], capture_output=True, text=True, timeout=60)
            return proc.stdout if proc.returncode != 255 and proc.stdout else None

        out = wait_until(logged_in, timeout=120, what="root's SSH login", interval=2)
    finally:
        qemu.kill()
        qemu.wait()
    lines = out.splitlines()
    assert lines[0] == "lab-image-1"  # the seed's hostname
    assert "inet 10.0.2.15/24" in lines[1]  # networkd's DHCP lease from slirp
    assert lines[2] == "/etc/ssh/ssh_host_ed25519_key"  # made on this machine
    assert lines[3:5] == ["no", "disabled"]  # no token seeded: no first boot, no agent yet
    assert lines[5].strip()  # the agent's venv runs
    print(f"boot to login in TCG: {booted:.1f} s")
