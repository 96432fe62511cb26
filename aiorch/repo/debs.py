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
from subprocess import CompletedProcess
from urllib.parse import unquote

from aiorch.errors import UserError
from aiorch.repo import signing

DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITE = "bookworm"
ARCHES: tuple[str, ...] = ("amd64", "arm64")
INDEX_FILES = ("Packages", "Packages.gz", "Release", "InRelease")
KEYRING_FILE = "aiorch-archive-keyring.gpg"
_INST = re.compile(r"^Inst (\S+) (?:\[\S+\] )?\((\S+) .*\[(\S+)\]\)")
# What apt says when it cannot plan a root: the lines that name the culprits.
_PROBLEM = re.compile(r"^ (?:(\S+) :)?\s*((?:Pre-)?Depends|Conflicts|Breaks): (.+)$")
_UNLOCATED = re.compile(r"^E: (Unable to locate package \S+|Package '?\S+'? has no installation)")


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


def default_sources(gpu: bool = False, arches: Sequence[str] = ARCHES) -> tuple[str, ...]:
    """bookworm, its updates and security, main (plus non-free for the NVIDIA driver)."""
    components = "main contrib non-free non-free-firmware" if gpu else "main"
    mirror = debian_mirror()
    opts = f"[arch={','.join(arches)} signed-by={KEYRING}]"
    return (
        f"deb {opts} {mirror} {SUITE} {components}",
        f"deb {opts} {mirror} {SUITE}-updates {components}",
        f"deb {opts} {DEFAULT_SECURITY} {SUITE}-security {components}",
    )


class _PrivateApt:
    """apt-get with its own sources, lists, cache and an empty dpkg status.

    One state holds the lists of every architecture (the sources' ``[arch=...]`` says which);
    each call plans for one architecture, as a host of that architecture would.
    """

    def __init__(self, root: Path, sources: Sequence[str], arches: Sequence[str]) -> None:
        self.root = root
        self.arches = tuple(arches)
        for sub in ("lists/partial", "archives/partial", "etc/parts", "etc/prefs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        (root / "etc/sources.list").write_text("\n".join(sources) + "\n")

    def options(self, arch: str | None) -> list[str]:
        r = self.root
        settings = {
            "Dir::State": r,
            "Dir::State::Lists": r / "lists",
            "Dir::State::status": r / "status",
            "Dir::Cache": r,
            "Dir::Cache::Archives": r / "archives",
            "Dir::Etc::SourceList": r / "etc/sources.list",
            "Dir::Etc::SourceParts": r / "etc/parts",
            "Dir::Etc::Preferences": r / "etc/preferences",
            "Dir::Etc::PreferencesParts": r / "etc/prefs",
            "APT::Architecture": arch or self.arches[0],
            "APT::Architectures": arch or ",".join(self.arches),
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            "Acquire::Languages": "none",
        }
        return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def call(self, arch: str | None, *args: str, cwd: Path | None = None) -> CompletedProcess[str]:
        argv = ["apt-get", "-q", *self.options(arch), *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=cwd)

    def run(self, arch: str | None, *args: str, cwd: Path | None = None) -> str:
        proc = self.call(arch, *args, cwd=cwd)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("E:", "W:"))]
            detail = "; ".join(lines[-3:]) or proc.stderr.strip()[-300:]
            raise UserError(f"apt-get {args[0]} failed: {detail}")
        return proc.stdout


def _deb_name(name: str, version: str, arch: str) -> str:
    """The file name apt gives a downloaded package (an epoch's colon becomes %3a)."""
    return f"{name}_{version.replace(':', '%3a')}_{arch}.deb"


def _why_unresolvable(root: str, arch: str, proc: CompletedProcess[str]) -> str:
    """apt's reasons for refusing one root, in one line (which packages conflict or lack)."""
    out = proc.stdout.splitlines() + proc.stderr.splitlines()
    reasons, package = [], root
    for m in filter(None, map(_PROBLEM.match, out)):
        package = m.group(1) or package  # a continuation line is about the package above
        reasons.append(f"{package} {m.group(2)}: {m.group(3).strip()}")
    reasons += [m.group(1) for m in map(_UNLOCATED.match, out) if m]
    if not reasons:
        reasons = [ln[3:] for ln in out if ln.startswith("E: ")][-1:] or ["apt gave no reason"]
    return f"cannot resolve {root} for {arch}: {'; '.join(dict.fromkeys(reasons))}"


def resolve(apt: _PrivateApt, roots: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Each root's closure, planned on its own per architecture, as one union.

    Planning roots one by one lets alternatives (chrony and ntpsec) share a repository: a
    host installs one of them, never both. A root spelled ``name:arch`` (a kernel flavour) is
    planned for that architecture only; an apt pattern root (``?priority(required)``) is
    narrowed to the planned architecture, since the lists hold every architecture's packages
    and the pattern would pick the foreign ones too. Returns deb file name -> (architecture,
    "name=version").
    """
    wanted: dict[str, tuple[str, str]] = {}
    problems = []
    for arch in apt.arches:
        for root in roots:
            if root.partition(":")[2] not in ("", arch):
                continue
            plan = f"?narrow({root},?architecture({arch}))" if root.startswith("?") else root
            proc = apt.call(arch, "install", "--simulate", plan)
            if proc.returncode != 0:
                problems.append(_why_unresolvable(root, arch, proc))
                continue
            for m in filter(None, map(_INST.match, proc.stdout.splitlines())):
                name, version, deb_arch = m.groups()
                wanted.setdefault(_deb_name(name, version, deb_arch), (arch, f"{name}={version}"))
    if problems:
        raise UserError("; ".join(problems))
    return wanted


def download_debs(
    packages: Sequence[str], sources: Sequence[str], dest: Path, arches: Sequence[str] = ARCHES
) -> None:
    """Make ``dest`` hold exactly the closures of ``packages``, reusing the debs already there."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".apt-", dir=dest.parent) as tmp:
        apt = _PrivateApt(Path(tmp), sources, arches)
        apt.run(None, "update")
        wanted = resolve(apt, packages)
        fetch = apt.root / "fetch"
        fetch.mkdir()
        for arch in apt.arches:
            missing = sorted(
                spec
                for name, (a, spec) in wanted.items()
                if a == arch and not (dest / name).exists()
            )
            if missing:
                apt.run(arch, "download", *missing, cwd=fetch)
        got = {p.name for p in fetch.glob("*.deb")} | {p.name for p in dest.glob("*.deb")}
        lacking = {unquote(n) for n in set(wanted) - got}
        if lacking:
            raise UserError(f"apt did not download {', '.join(sorted(lacking))}")
        for old in dest.glob("*.deb"):
            if old.name not in wanted:
                old.unlink()
        for deb in fetch.glob("*.deb"):
            if deb.name in wanted:
                shutil.move(deb, dest / deb.name)


def _ensure_scanpackages() -> None:
    """dpkg-scanpackages comes with dpkg-dev; install it where it is missing and we may."""
    if shutil.which("dpkg-scanpackages"):
        return
    if os.geteuid() != 0:
        raise UserError("dpkg-scanpackages is missing: apt-get install dpkg-dev")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "install", "-y", "-q", "dpkg-dev"], check=True, env=env)


def _release_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")


def index_debs(debs_dir: Path) -> None:
    """Write Packages and Packages.gz: every deb, of every architecture, in one flat index."""
    _ensure_scanpackages()
    proc = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
        cwd=debs_dir,
        capture_output=True,
        check=True,
    )
    (debs_dir / "Packages").write_bytes(proc.stdout)
    (debs_dir / "Packages.gz").write_bytes(gzip.compress(proc.stdout, compresslevel=9, mtime=0))


def sign_release(
    debs_dir: Path,
    *,
    arches: Sequence[str],
    apt_secret: str,
    apt_public: str,
    valid_until: datetime,
    now: datetime | None = None,
) -> None:
    """Write Release, InRelease (Release signed inline) and the keyring hosts verify it with.

    ``Valid-Until`` bounds how long a captured repository can be replayed to a host: apt
    refuses the repository after it, so the site must import a newer bundle in time.
    """
    sums = ""
    for name in ("Packages", "Packages.gz"):
        data = (debs_dir / name).read_bytes()
        sums += f" {hashlib.sha256(data).hexdigest()} {len(data)} {name}\n"
    release = (
        f"Origin: aiorch\nLabel: aiorch site repository\nSuite: {SUITE}\n"
        f"Architectures: {' '.join(arches)} all\n"
        f"Date: {_release_time(now or datetime.now(UTC))}\n"
        f"Valid-Until: {_release_time(valid_until)}\nSHA256:\n{sums}"
    )
    (debs_dir / "Release").write_text(release)
    (debs_dir / "InRelease").write_text(signing.clearsign(release, apt_secret))
    (debs_dir / KEYRING_FILE).write_bytes(signing.keyring(apt_public))
