"""The lab's base image: a minimal Debian bookworm with systemd, sshd and python3.

There is no container registry on these machines, so the image is built here
with debootstrap from the Debian mirror apt already uses, imported with
``podman import`` and tagged with a hash of the recipe below. A tag that exists
is reused; a changed recipe gives a new tag and a rebuild. Builds run under a
file lock so parallel callers build once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from aiorch.errors import UserError
from aiorch.lab.podman import RUNTIME, podman, podman_json, preflight
from aiorch.lab.state import locked, state_dir

REPOSITORY = "localhost/aiorch-lab-base"
SUITE = "bookworm"
SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# python3-apt: Ansible's apt module; procps: pkill for the kill fault; the rest boots and logs in.
PACKAGES = (
    "python3",
    "python3-apt",
    "openssh-server",
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "sudo",
    "ca-certificates",
    "procps",
    "netbase",
)

HOSTKEY_UNIT = "aiorch-lab-hostkeys.service"

# Files written into the root after debootstrap. Root logs in by key only: it is a lab.
FILES = {
    "etc/ssh/sshd_config.d/aiorch-lab.conf": (
        "# aiorch lab host: root by key only, one ed25519 host key made at first boot.\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UseDNS no\n"
    ),
    f"etc/systemd/system/{HOSTKEY_UNIT}": (
        "[Unit]\n"
        "Description=Make this host's own SSH host key at first boot\n"
        "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n"
        "Before=ssh.service\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key\n"
        "\n"
        "[Install]\n"
        "RequiredBy=ssh.service\n"
    ),
    # Empty: systemd gives every container its own id at first boot.
    "etc/machine-id": "",
}
LINKS = {
    f"etc/systemd/system/ssh.service.requires/{HOSTKEY_UNIT}": (
        f"/etc/systemd/system/{HOSTKEY_UNIT}"
    ),
}
# Shared identity and downloaded package data must not end up in every host.
REMOVE_GLOBS = (
    "etc/ssh/ssh_host_*",
    "var/lib/dbus/machine-id",
    "var/cache/apt/archives/*.deb",
    "var/lib/apt/lists/*_Packages",
)


def recipe() -> dict[str, object]:
    """Everything that decides the image's content; its hash is the image tag."""
    return {
        "suite": SUITE,
        "variant": "minbase",
        "packages": sorted(PACKAGES),
        "files": FILES,
        "links": LINKS,
        "remove": list(REMOVE_GLOBS),
        "cmd": "/sbin/init",
    }


def image_ref() -> str:
    """The image name for the current recipe, e.g. ``localhost/aiorch-lab-base:3f2a...``."""
    digest = hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()
    return f"{REPOSITORY}:{digest[:12]}"


def image_exists(ref: str) -> bool:
    return podman("image", "exists", ref, check=False).returncode == 0


def ensure_image() -> str:
    """Return the current base image, building it once if the recipe changed."""
    ref = image_ref()
    if image_exists(ref):
        return ref
    preflight("debootstrap", "tar")
    with locked(state_dir() / "image.lock"):
        if not image_exists(ref):  # another caller may have built it while we waited
            _build(ref)
            _prune_other_tags(ref)
    return ref


def debian_mirror() -> str:
    """The Debian mirror apt on this machine uses for the suite (deb822 sources file)."""
    if mirror := os.environ.get("AIORCH_LAB_MIRROR"):
        return mirror
    try:
        stanzas = SOURCES.read_text().split("\n\n")
    except OSError as exc:
        raise UserError(f"cannot read {SOURCES} to find the Debian mirror: {exc}") from exc
    for stanza in stanzas:
        fields = dict(
            line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[0] != "#"
        )
        if SUITE in fields.get("Suites", "").split() and fields.get("URIs"):
            return fields["URIs"].split()[0]
    raise UserError(f"no {SUITE} mirror in {SOURCES}; set AIORCH_LAB_MIRROR")


def _build(ref: str) -> None:
    work = state_dir() / "build"
    shutil.rmtree(work, ignore_errors=True)  # a build that died earlier; we hold the lock
    root = work / "root"
    root.mkdir(parents=True)
    cache = state_dir() / "debs"  # downloaded .debs, kept so a recipe change rebuilds fast
    cache.mkdir(parents=True, exist_ok=True)
    log = state_dir() / "build.log"
    try:
        with log.open("w") as out:
            done = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(PACKAGES)}",
                    f"--keyring={KEYRING}",
                    f"--cache-dir={cache}",
                    SUITE,
                    str(root),
                    debian_mirror(),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            raise UserError(f"debootstrap failed (exit {done.returncode}); see {log}")
        _customise(root)
        _import(root, ref)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _customise(root: Path) -> None:
    for pattern in REMOVE_GLOBS:
        for path in root.glob(pattern):
            path.unlink()
    for rel, content in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(0o644)
    for rel, target in LINKS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.symlink_to(target)


def _import(root: Path, ref: str) -> None:
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    imported = subprocess.run(
        [
            "podman",
            "--runtime",
            RUNTIME,
            "import",
            "--change",
            'CMD ["/sbin/init"]',
            "--change",
            f"LABEL aiorch.lab.recipe={ref.rsplit(':', 1)[1]}",
            "-",
            ref,
        ],
        stdin=tar.stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    if tar.stdout is not None:
        tar.stdout.close()
    if tar.wait() != 0 or imported.returncode != 0:
        raise UserError(f"podman import of the lab image failed: {imported.stderr.strip()}")


def _prune_other_tags(keep: str) -> None:
    """Drop images of older recipes; ones still used by a running lab stay (rmi refuses)."""
    for image in podman_json("images", "--filter", f"reference={REPOSITORY}", "--format", "json"):
        for name in image.get("Names") or []:
            if name != keep:
                podman("rmi", name, check=False)
