"""The deployed OS's configuration, written into the root tree mmdebstrap made.

Everything a machine needs before the hub knows it: the root by UUID, DHCP on every Ethernet
NIC, a serial console, key-only root SSH with host keys made on the machine itself (the image
ships none, or every machine would share them), the edge agent where its role puts it, and a
first-boot unit that enrolls it with the token the ramdisk seeds.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import yaml

from aiorch.errors import UserError
from aiorch.metal.image_record import (  # the seed's one home, shared with the hub
    SEED_ENROLL_TOKEN,
)

# The role that installs the agent on a host (aiorch's playbooks, as installed): the image puts
# the agent where it does, with its unit, so that site.yml later finds both in place.
ROLE = Path(str(resources.files("aiorch.playbooks"))) / "roles" / "aiorch_edge_agent"


FIRSTBOOT_UNIT = "aiorch-firstboot.service"
HOSTKEYS_UNIT = "aiorch-ssh-hostkeys.service"
AGENT_UNIT = "aiorch-agent.service"
FIRSTBOOT_SCRIPT = "/usr/local/libexec/aiorch-firstboot"
KERNEL_CONSOLE = "console=ttyS0,115200 console=tty0"
WHEELS_IN_ROOT = "tmp/aiorch-wheels"


class ImageError(UserError):
    """The image cannot be built: the message names the missing tool, package or file."""


def role_defaults() -> dict[str, Any]:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert isinstance(defaults, dict)
    return defaults


def agent_unit() -> str:
    """The agent's unit rendered from the role's own template with the role's defaults."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROLE / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    context = {**role_defaults(), "ansible_managed": "Managed by aiorch (image build)"}
    return env.get_template("aiorch-agent.service.j2").render(context)


def firstboot_script() -> str:
    defaults = role_defaults()
    venv, config = defaults["aiorch_edge_agent_venv"], defaults["aiorch_edge_agent_config_path"]
    return f"""#!/bin/sh
# aiorch first boot: enroll the agent with the seed's one-use token, then run the agent.
# The token goes in on stdin, never on a command line; it is removed once it has been used.
set -eu
token={SEED_ENROLL_TOKEN}
read_hub='import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["hub_url"])'
hub=$({venv}/bin/python -c "$read_hub" {config})
# grub-pc's upgrades reinstall GRUB to the disk in this debconf answer, which the image could
# not know: the disk it was written to. Never fatal: the agent enrolls either way.
disk=/dev/$(lsblk -no PKNAME "$(findmnt -no SOURCE /)") &&
    echo "grub-pc grub-pc/install_devices multiselect $disk" | debconf-set-selections ||
    echo "aiorch first boot: grub-pc/install_devices not set" >&2
{venv}/bin/aiorch-agent enroll --config {config} --hub "$hub" < "$token"
rm -f "$token"
systemctl enable {AGENT_UNIT}
systemctl start --no-block {AGENT_UNIT}
"""


FIRSTBOOT = f"""[Unit]
Description=aiorch first boot: enroll the edge agent with the seeded token
ConditionPathExists={SEED_ENROLL_TOKEN}
Wants=network-online.target ssh.service
# The hub configures the machine over SSH as soon as its agent enrolls: enroll only once
# sshd listens (ssh.service is Type=notify), or that run's pre-flight finds port 22 closed.
After=network-online.target ssh.service
Before={AGENT_UNIT}
# Keep trying: the hub may be down or the network slow when the machine first boots.
StartLimitIntervalSec=0

[Service]
Type=oneshot
ExecStart={FIRSTBOOT_SCRIPT}
Restart=on-failure
RestartSec=10

[Install]
WantedBy=multi-user.target
"""

HOSTKEYS = """[Unit]
Description=aiorch: this machine's own SSH host keys (the image carries none)
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=ssh.service
"""

NETWORK = """[Match]
Name=en* eth*

[Network]
DHCP=yes
"""

SSHD = """# aiorch: root logs in with a key (the seed's authorized_keys), never a password.
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
"""

GRUB_DEFAULTS = f"""# aiorch: what update-grub writes after a kernel upgrade boots as grub.cfg did.
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX="{KERNEL_CONSOLE}"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
"""

ENABLED = (
    "systemd-networkd.service",
    "systemd-resolved.service",
    "serial-getty@ttyS0.service",
    HOSTKEYS_UNIT,
    FIRSTBOOT_UNIT,
)


@dataclass(frozen=True)
class DiskIds:
    """The image's file system ids: the root's ext4 UUID and the ESP's vfat volume id (eight
    hex digits, as mkfs.vfat -i takes it)."""

    root_uuid: str
    esp_id: str

    @property
    def esp_uuid(self) -> str:
        """The ESP's id as blkid and fstab write it: XXXX-XXXX."""
        return f"{self.esp_id[:4]}-{self.esp_id[4:]}"


def fstab(ids: DiskIds) -> str:
    """The root by UUID; the ESP at /boot/efi, ``nofail`` and never checked: a BIOS machine
    boots the same without it."""
    return (
        f"UUID={ids.root_uuid} / ext4 errors=remount-ro 0 1\n"
        f"UUID={ids.esp_uuid} /boot/efi vfat umask=0077,nofail 0 0\n"
    )


def grub_cfg(uuid: str, kernel: str) -> str:
    """The boot menu: the Debian kernel and its initramfs, the root by UUID, one second."""
    return f"""set timeout=1
set default=0
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
insmod part_gpt
insmod ext2
search --no-floppy --fs-uuid --set=root {uuid}
menuentry "Debian GNU/Linux, aiorch ({kernel})" {{
  linux /boot/vmlinuz-{kernel} root=UUID={uuid} ro {KERNEL_CONSOLE}
  initrd /boot/initrd.img-{kernel}
}}
"""


def run(argv: list[str], what: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ImageError(f"{what} failed (exit {proc.returncode}): {detail[0]}")
    return proc.stdout


@contextmanager
def mounted(source: str, target: Path, *options: str) -> Iterator[Path]:
    """``mount`` for the block's length, unmounted even when the block fails: lazily where a
    process still holds it, so that no cleanup after it ever deletes through a bound /dev."""
    run(["mount", *options, source, str(target)], f"mount {source}")
    try:
        yield target
    finally:
        if subprocess.run(["umount", "-R", str(target)], capture_output=True).returncode:
            subprocess.run(["umount", "-R", "--lazy", str(target)], capture_output=True)


@contextmanager
def chroot_mounts(root: Path) -> Iterator[Path]:
    """/dev, /proc and /sys of this machine bound into ``root`` (what grub and pip probe)."""
    with ExitStack() as stack:
        for sub in ("dev", "proc", "sys"):
            (root / sub).mkdir(exist_ok=True)
            stack.enter_context(mounted(f"/{sub}", root / sub, "--rbind", "--make-rslave"))
        yield root


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _lock_root_password(root: Path) -> None:
    """root's password field becomes ``!``: locked, with no password behind it."""
    shadow = root / "etc/shadow"
    lines = shadow.read_text().splitlines()
    fields = [ln.split(":") for ln in lines]
    shadow.write_text("".join(":".join([f[0], "!", *f[2:]] if f[0] == "root" else f) + "\n"
                              for f in fields))  # fmt: skip


def install_agent(root: Path, wheels: Path) -> None:
    """The agent's venv from the repository's wheels, as the role installs it (pip, no index)."""
    venv = role_defaults()["aiorch_edge_agent_venv"]
    package = role_defaults()["aiorch_edge_agent_package"]
    staged = root / WHEELS_IN_ROOT
    shutil.copytree(wheels, staged)
    try:
        run(["chroot", str(root), "python3", "-m", "venv", venv], "python3 -m venv")
        pip = [f"{venv}/bin/pip", "install", "--no-index", "--no-cache-dir", "--find-links",
               f"/{WHEELS_IN_ROOT}", package]  # fmt: skip
        run(["chroot", str(root), *pip], f"pip install {package}")
    finally:
        shutil.rmtree(staged)


def configure(root: Path, ids: DiskIds, wheels: Path) -> None:
    """Write the OS's configuration into ``root`` (with its chroot mounts in place)."""
    _write(root, "etc/fstab", fstab(ids))
    _write(root, "etc/hostname", "aiorch-node\n")
    _write(root, "etc/hosts", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    _write(root, "etc/machine-id", "")  # empty: systemd makes each machine its own
    _write(root, "etc/apt/sources.list", "")  # site.yml points apt at the site repository
    _write(root, "etc/systemd/network/80-aiorch-dhcp.network", NETWORK)
    _write(root, "etc/ssh/sshd_config.d/aiorch.conf", SSHD)
    _write(root, "etc/default/grub.d/aiorch.cfg", GRUB_DEFAULTS)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    _lock_root_password(root)
    for rel, mode in (("boot/efi", 0o700), ("etc/aiorch", 0o755), ("etc/aiorch/seed", 0o700),
                      ("root/.ssh", 0o700),
                      (role_defaults()["aiorch_edge_agent_state_dir"], 0o700)):  # fmt: skip
        (root / rel.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (root / rel.lstrip("/")).chmod(mode)
    install_agent(root, wheels)
    _write(root, f"etc/systemd/system/{AGENT_UNIT}", agent_unit())
    _write(root, f"etc/systemd/system/{FIRSTBOOT_UNIT}", FIRSTBOOT)
    _write(root, f"etc/systemd/system/{HOSTKEYS_UNIT}", HOSTKEYS)
    _write(root, FIRSTBOOT_SCRIPT, firstboot_script(), 0o755)
    run(["chroot", str(root), "systemctl", "enable", *ENABLED], "systemctl enable")
