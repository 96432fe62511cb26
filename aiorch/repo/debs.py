"""Debian packages with their whole dependency closure, indexed as a flat apt repository.

apt itself resolves the closure: it runs against a private state with an empty
dpkg status, so it picks every package down to libc6 as if for an empty
machine, and any host on the same release finds all it needs, whatever it
already has. Nothing here touches the build machine's own apt state.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from aiorch.errors import UserError

DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITE = "bookworm"
ARCH = "amd64"
INDEX_FILES = ("Packages", "Packages.gz", "Release")
_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[(\S+)\]\)")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (``AIORCH_REPO_MIRROR`` overrides)."""
    if env := os.environ.get("AIORCH_REPO_MIRROR"):
        return env
    try:
        text = DEBIAN_SOURCES.read_text()
    except OSError:
        return DEFAULT_MIRROR
    for line in text.splitlines():
        if line.startswith("URIs:") and "security" not in line:
            return line.split()[1]
    return DEFAULT_MIRROR


def default_sources(gpu: bool = False) -> tuple[str, ...]:
    """bookworm, its updates and security, main (plus non-free for the NVIDIA driver)."""
    components = "main contrib non-free non-free-firmware" if gpu else "main"
    mirror = debian_mirror()
    opts = f"[arch={ARCH} signed-by={KEYRING}]"
    return (
        f"deb {opts} {mirror} {SUITE} {components}",
        f"deb {opts} {mirror} {SUITE}-updates {components}",
        f"deb {opts} {DEFAULT_SECURITY} {SUITE}-security {components}",
    )


class _PrivateApt:
    """apt-get with its own sources, lists, cache and an empty dpkg status."""

    def __init__(self, root: Path, sources: Sequence[str]) -> None:
        self.root = root
        for sub in ("lists/partial", "archives/partial", "etc/parts", "etc/prefs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        (root / "etc/sources.list").write_text("\n".join(sources) + "\n")
        self.archives = root / "archives"

    def options(self) -> list[str]:
        r = self.root
        settings = {
            "Dir::State": r,
            "Dir::State::Lists": r / "lists",
            "Dir::State::status": r / "status",
            "Dir::Cache": r,
            "Dir::Cache::Archives": self.archives,
            "Dir::Etc::SourceList": r / "etc/sources.list",
            "Dir::Etc::SourceParts": r / "etc/parts",
            "Dir::Etc::Preferences": r / "etc/preferences",
            "Dir::Etc::PreferencesParts": r / "etc/prefs",
            "APT::Architecture": ARCH,
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            "Acquire::Languages": "none",
        }
        return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def run(self, *args: str) -> str:
        argv = ["apt-get", "-q", *self.options(), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("E:", "W:"))]
            detail = "; ".join(lines[-3:]) or proc.stderr.strip()[-300:]
            raise UserError(f"apt-get {args[0]} failed: {detail}")
        return proc.stdout


def _deb_name(name: str, version: str, arch: str) -> str:
    """The file name apt gives a downloaded package (an epoch's colon becomes %3a)."""
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


def download_debs(packages: Sequence[str], sources: Sequence[str], dest: Path) -> None:
    """Make ``dest`` hold exactly the closure of ``packages``, reusing the debs already there."""
    dest.mkdir(parents=True, exist_ok=True)
    # Beside ``dest``, so the debs already there can be hard-linked into apt's cache.
    with tempfile.TemporaryDirectory(prefix=".apt-", dir=dest.parent) as tmp:
        apt = _PrivateApt(Path(tmp), sources)
        for old in dest.glob("*.deb"):  # apt skips what its cache already holds
            os.link(old, apt.archives / old.name)
        apt.run("update")
        plan = apt.run("install", "--simulate", *packages)
        wanted = {_deb_name(*m.groups()) for m in map(_INST.match, plan.splitlines()) if m}
        apt.run("install", "--download-only", "--yes", *packages)
        got = {p.name for p in apt.archives.glob("*.deb")}
        missing = {unquote(n) for n in wanted - got}
        if missing:
            raise UserError(f"apt did not download {', '.join(sorted(missing))}")
        for old in dest.glob("*.deb"):
            if old.name not in wanted:
                old.unlink()
        for name in wanted:
            if not (dest / name).exists():
                shutil.move(apt.archives / name, dest / name)


def _ensure_scanpackages() -> None:
    """dpkg-scanpackages comes with dpkg-dev; install it where it is missing and we may."""
    if shutil.which("dpkg-scanpackages"):
        return
    if os.geteuid() != 0:
        raise UserError("dpkg-scanpackages is missing: apt-get install dpkg-dev")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "dpkg-dev"], check=True, env=env)


def index_debs(debs_dir: Path) -> None:
    """Write Packages, Packages.gz and an unsigned Release (hosts trust the repo explicitly)."""
    _ensure_scanpackages()
    proc = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
        cwd=debs_dir,
        capture_output=True,
        check=True,
    )
    packages = proc.stdout
    (debs_dir / "Packages").write_bytes(packages)
    packed = gzip.compress(packages, compresslevel=9, mtime=0)
    (debs_dir / "Packages.gz").write_bytes(packed)
    sums = "".join(
        f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}\n"
        for name, data in (("Packages", packages), ("Packages.gz", packed))
    )
    date = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")
    (debs_dir / "Release").write_text(
        f"Origin: aiorch\nLabel: aiorch site repository\nSuite: {SUITE}\n"
        f"Architectures: {ARCH} all\nDate: {date}\nSHA256:\n{sums}"
    )
