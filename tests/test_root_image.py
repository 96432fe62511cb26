"""The root image's parts that need no build: the units and the first-boot script (run for
real against a stand-in agent), the boot config, and the one-line errors for a missing tool,
a repository that lacks a package, and bad input on the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aiorch.metal import image, image_root
from aiorch.metal.image import (
    BIOS_BOOT_TYPE,
    ESP_PARTITION,
    ESP_TYPE,
    LINUX_TYPE,
    ROOT_PARTITION,
    ImageError,
    build_image,
    partition_table,
)
from aiorch.repo.packages import IMAGE_PACKAGES, REQUIRED_PATTERN, SITE_PACKAGES

UUID = "0b8e3c1a-4d5f-4e6a-9b7c-1d2e3f4a5b6c"


def test_the_agent_unit_is_the_roles_template_with_the_roles_defaults():
    unit = image_root.agent_unit()
    assert (
        "ExecStart=/opt/aiorch-agent/bin/aiorch-agent run --config /etc/aiorch/agent.yaml" in unit
    )
    assert "RestartSec=5" in unit and "WantedBy=multi-user.target" in unit
    assert "{{" not in unit and "{%" not in unit
    assert image_root.role_defaults()["aiorch_edge_agent_config_path"] == image.SEED_AGENT_CONFIG


def test_first_boot_waits_for_the_token_the_network_and_sshd_and_retries_forever():
    unit = image_root.FIRSTBOOT
    for line in (
        f"ConditionPathExists={image.SEED_ENROLL_TOKEN}",
        "After=network-online.target ssh.service",
        "Before=aiorch-agent.service",
        "StartLimitIntervalSec=0",
        "Restart=on-failure",
        "WantedBy=multi-user.target",
    ):
        assert line in unit.splitlines(), line
    assert image_root.FIRSTBOOT_UNIT in image_root.ENABLED
    assert image_root.AGENT_UNIT not in image_root.ENABLED  # first boot enables it


def _stand_in(tmp_path: Path, agent_rc: int) -> tuple[str, Path, Path]:
    """The first-boot script with its paths moved under tmp_path: an agent that records its
    argv and stdin and exits ``agent_rc``, a systemctl that records its calls."""
    venv, bin_dir = tmp_path / "venv", tmp_path / "bin"
    (venv / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    os.symlink(sys.executable, venv / "bin/python")  # has pyyaml, as the agent's venv does
    record = tmp_path / "record"
    agent = venv / "bin/aiorch-agent"
    agent.write_text(
        f'#!/bin/sh\necho "$@" >> {record}\ncat >> {record}\necho >> {record}\nexit {agent_rc}\n'
    )
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(f'#!/bin/sh\necho "systemctl $@" >> {record}\n')
    # The root's disk, as the written machine would find it; debconf's answer is recorded.
    findmnt, lsblk = bin_dir / "findmnt", bin_dir / "lsblk"
    findmnt.write_text('#!/bin/sh\n[ "$*" = "-no SOURCE /" ] && echo /dev/nvme0n1p1\n')
    lsblk.write_text('#!/bin/sh\n[ "$*" = "-no PKNAME /dev/nvme0n1p1" ] && echo nvme0n1\n')
    debconf = bin_dir / "debconf-set-selections"
    debconf.write_text(f"#!/bin/sh\ncat > {record}.debconf\n")
    for tool in (agent, systemctl, findmnt, lsblk, debconf):
        tool.chmod(0o755)
    config = tmp_path / "agent.yaml"
    config.write_text("hub_url: https://10.0.2.100:8700\nstate_dir: /var/lib/aiorch-agent\n")
    token = tmp_path / "enroll-token"
    token.write_text("tok-secret")
    script = (
        image_root.firstboot_script()
        .replace(image_root.role_defaults()["aiorch_edge_agent_venv"], str(venv))
        .replace(image.SEED_ENROLL_TOKEN, str(token))
        .replace(image.SEED_AGENT_CONFIG, str(config))
    )
    return script, token, record


@pytest.mark.parametrize("agent_rc", [0, 3])
def test_first_boot_enrolls_with_the_token_on_stdin_then_starts_the_agent(tmp_path, agent_rc):
    script, token, record = _stand_in(tmp_path, agent_rc)
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True)
    lines = record.read_text().splitlines()
    answer = Path(f"{record}.debconf").read_text()
    assert answer == "grub-pc grub-pc/install_devices multiselect /dev/nvme0n1\n"
    assert lines[0] == f"enroll --config {tmp_path / 'agent.yaml'} --hub https://10.0.2.100:8700"
    assert lines[1] == "tok-secret"  # on stdin, not in argv
    if agent_rc == 0:
        assert proc.returncode == 0, proc.stderr
        assert not token.exists()
        assert lines[2:] == [
            "systemctl enable aiorch-agent.service",
            "systemctl start --no-block aiorch-agent.service",
        ]
    else:  # systemd runs it again (Restart=on-failure); the token stays for that try
        assert proc.returncode == agent_rc
        assert token.exists() and len(lines) == 2


def test_boot_config_names_the_root_by_uuid_with_a_serial_console():
    cfg = image_root.grub_cfg(UUID, "6.1.0-57-amd64")
    assert "set timeout=1" in cfg
    assert f"search --no-floppy --fs-uuid --set=root {UUID}" in cfg
    linux = next(ln.strip() for ln in cfg.splitlines() if ln.strip().startswith("linux "))
    assert linux == (
        f"linux /boot/vmlinuz-6.1.0-57-amd64 root=UUID={UUID} ro console=ttyS0,115200 console=tty0"
    )
    assert "initrd /boot/initrd.img-6.1.0-57-amd64" in cfg
    assert "insmod part_gpt" in cfg
    assert image_root.fstab(image_root.DiskIds(UUID, "A1B2C3D4")).splitlines() == [
        f"UUID={UUID} / ext4 errors=remount-ro 0 1",
        "UUID=A1B2-C3D4 /boot/efi vfat umask=0077,nofail 0 0",
    ]


def test_the_disk_is_gpt_with_bios_boot_esp_and_the_root_to_the_end():
    lines = partition_table().splitlines()
    assert lines[0] == "label: gpt"
    assert lines[1] == f"start=2048, size=2048, type={BIOS_BOOT_TYPE}, name=bios-boot"
    assert f"type={ESP_TYPE}" in lines[ESP_PARTITION]
    assert lines[ROOT_PARTITION].startswith(f"type={LINUX_TYPE}")  # no size: to the end


def test_the_site_repository_carries_the_image_and_its_base():
    assert set(IMAGE_PACKAGES) <= set(SITE_PACKAGES)
    assert REQUIRED_PATTERN in IMAGE_PACKAGES  # the Essential set no package depends on
    for needed in (
        "udev",
        "grub-pc:amd64",
        "grub-efi-amd64-bin:amd64",
        "efibootmgr",
        "linux-image-amd64:amd64",
        "systemd-sysv",
        "openssh-server",
    ):
        assert needed in IMAGE_PACKAGES


def _fake_repo(tmp_path: Path, names: list[str]) -> Path:
    repo = tmp_path / "repo"
    (repo / "debs").mkdir(parents=True)
    (repo / "wheels").mkdir()
    (repo / "debs/Packages").write_text("".join(f"Package: {n}\nVersion: 1\n\n" for n in names))
    (repo / "debs/aiorch-archive-keyring.gpg").write_bytes(b"ring")
    (repo / "wheels/index.html").write_text("<html></html>")
    (repo / "wheels/aiorch-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    return repo


def test_a_repository_lacking_a_package_is_named_in_one_line(tmp_path):
    names = [p.partition(":")[0] for p in IMAGE_PACKAGES if p != REQUIRED_PATTERN]
    assert image._check_repo(_fake_repo(tmp_path, names))  # complete: accepted
    repo = _fake_repo(tmp_path / "b", [n for n in names if n != "grub-pc"])
    with pytest.raises(ImageError, match=r"lacks grub-pc:amd64: build it with `aiorch repo build`"):
        image._check_repo(repo)
    with pytest.raises(ImageError, match=r"not a site repository: .*Packages is missing"):
        image._check_repo(tmp_path / "nowhere")


def test_a_missing_tool_is_named_with_its_package(monkeypatch, tmp_path):
    real = image.shutil.which
    monkeypatch.setattr(image.shutil, "which", lambda t: None if t == "sfdisk" else real(t))
    with pytest.raises(ImageError, match=r"^sfdisk is missing: apt-get install fdisk$"):
        build_image(tmp_path / "repo", tmp_path / "out")
    with pytest.raises(ImageError, match=r"cannot hold the root"):
        build_image(tmp_path / "repo", tmp_path / "out", size_mib=16)


def test_the_cli_reports_a_bad_repository_in_one_line(tmp_path):
    argv = [sys.executable, "-c", "from aiorch.cli.main import run; run()", "repo", "image",
            "--repo", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("aiorch: error: ")
    assert "Traceback" not in proc.stderr
