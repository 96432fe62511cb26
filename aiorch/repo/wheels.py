"""Wheel directories for sites: the agent's closure (hosts), the hub's closure (an air-gapped
hub host) and the project's own wheel, each file exactly as locked (aiorch.repo.lock).

Hosts install with ``pip install --no-index --find-links URL/wheels/index.html``,
so the agent's directory carries an ``index.html`` that links every wheel.
"""

from __future__ import annotations

import hashlib
import html
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from aiorch.errors import UserError
from aiorch.repo import hostpython, lock
from aiorch.repo.hostpython import ARCHES, PROJECT

SOURCE_GLOBS = (
    "pyproject.toml",
    "setup.py",
    "aiorch/**/*.py",
    "edge_agent/**/*.py",
    "playbooks/**/*",
)
# What a wheel without aiorch's playbooks lacks: a hub installed from it could not provision.
PLAYBOOKS_MARK = "aiorch/playbooks/site.yml"


def project_digest(project: Path) -> str:
    """A hash of the sources the project's wheel is built from: rebuild only when it moves."""
    digest = hashlib.sha256()
    for pattern in SOURCE_GLOBS:
        for path in sorted(project.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(project)).encode() + b"\0")
                digest.update(path.read_bytes())
    return digest.hexdigest()


def _normalized(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def own_wheels(wheels_dir: Path, name: str) -> list[Path]:
    return sorted(wheels_dir.glob(f"{_normalized(name)}-*.whl"))


def download_locked(
    closure: lock.Closure, dest: Path, arches: Sequence[str], project: Path
) -> list[Path]:
    """Make ``dest`` hold exactly the locked wheels of ``arches`` (plus the project's own):
    other wheels go, files already there are reused once pip has checked their sha256."""
    hostpython.check_arches(list(arches))
    locked = lock.read_lock(project, closure)  # before any download: a stale lock stops here
    wanted = locked.files(arches)
    name, _ = hostpython.project_meta(project)
    dest.mkdir(parents=True, exist_ok=True)
    keep = set(own_wheels(dest, name))
    for old in dest.glob("*.whl"):
        if old.name not in wanted and old not in keep:
            old.unlink()
    for arch in arches:
        argv = hostpython.download_argv(dest, arch, "--no-deps", "--require-hashes")
        hostpython.run_pip(*argv, "--requirement", str(locked.path))
    missing = sorted(f for f in wanted if not (dest / f).is_file())
    if missing:
        raise UserError(f"pip did not fetch the locked {', '.join(missing)}: run `make lock`")
    return sorted(dest / f for f in wanted)


def download_agent(
    dest: Path, arches: Sequence[str] = ARCHES, *, project: Path = PROJECT
) -> list[Path]:
    """The agent's dependency wheels (constraints/agent.txt) for the hosts' ``arches``."""
    return download_locked(lock.AGENT, dest, arches, project)


def download_hub(
    dest: Path, arches: Sequence[str] = ARCHES, *, project: Path = PROJECT
) -> list[Path]:
    """The hub's dependency wheels (constraints/hub.txt): what ``aiorch[hub]`` needs besides
    the project's own wheel, for a hub host of any of ``arches``."""
    return download_locked(lock.HUB, dest, arches, project)


def build_own_wheel(project: Path, wheels_dir: Path, name: str) -> Path:
    """``pip wheel --no-deps`` the project; the old wheel goes only once the new one exists,
    and a wheel without the playbooks is refused."""
    with tempfile.TemporaryDirectory(prefix="aiorch-wheel-") as tmp:
        hostpython.run_pip("wheel", "--no-deps", "--wheel-dir", tmp, str(project))
        built = list(Path(tmp).glob("*.whl"))
        if len(built) != 1:
            raise UserError(f"pip wheel made {len(built)} wheels, expected one")
        if _normalized(name) == "aiorch":
            with zipfile.ZipFile(built[0]) as wheel:
                if PLAYBOOKS_MARK not in wheel.namelist():
                    raise UserError(f"{built[0].name} has no {PLAYBOOKS_MARK}: check setup.py")
        for old in own_wheels(wheels_dir, name):
            old.unlink()
        wheels_dir.mkdir(parents=True, exist_ok=True)
        return built[0].replace(wheels_dir / built[0].name)


def write_index(wheels_dir: Path) -> None:
    """A plain page of links: all pip's ``--find-links`` needs from a static file server."""
    links = "".join(
        f'<a href="{html.escape(p.name)}">{html.escape(p.name)}</a><br>\n'
        for p in sorted(wheels_dir.glob("*.whl"))
    )
    (wheels_dir / "index.html").write_text(
        f"<!DOCTYPE html>\n<html><head><title>aiorch wheels</title></head><body>\n"
        f"{links}</body></html>\n"
    )
