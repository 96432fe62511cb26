"""The agent's wheels for the hosts' Python: the project's own wheel and its dependencies.

Hosts install with ``pip install --no-index --find-links URL/wheels/index.html``,
so the directory carries an ``index.html`` that links every wheel.
"""

from __future__ import annotations

import hashlib
import html
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from aiorch.errors import UserError

# bookworm's python3 on x86_64 (glibc 2.36): what the wheels must install on.
PYTHON_VERSION = "3.11"
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64")
SOURCE_GLOBS = ("pyproject.toml", "aiorch/**/*.py", "edge_agent/**/*.py")


def project_meta(project: Path) -> tuple[str, list[str]]:
    """The project's distribution name and its base dependencies (the agent's install)."""
    try:
        data = tomllib.loads((project / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read {project}/pyproject.toml: {exc}") from None
    return str(data["project"]["name"]), list(data["project"].get("dependencies", []))


def project_digest(project: Path) -> str:
    """A hash of the sources the project's wheel is built from: rebuild only when it moves."""
    digest = hashlib.sha256()
    for pattern in SOURCE_GLOBS:
        for path in sorted(project.glob(pattern)):
            digest.update(str(path.relative_to(project)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def run_pip(*args: str) -> None:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"pip {args[0]} failed: {proc.stderr.strip()[-500:]}")


def _normalized(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def own_wheels(wheels_dir: Path, name: str) -> list[Path]:
    return sorted(wheels_dir.glob(f"{_normalized(name)}-*.whl"))


def download_argv(dest: Path, *requirements: str) -> list[str]:
    """``pip download`` arguments for binary wheels that install on the hosts' Python."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    return [
        "download",
        "--dest",
        str(dest),
        "--only-binary=:all:",
        "--python-version",
        PYTHON_VERSION,
        "--implementation",
        "cp",
        *platforms,
        *requirements,
    ]


def download_dependencies(lock_file: Path, wheels_dir: Path, name: str) -> None:
    """Replace every wheel but the project's own with the locked ones, each checked against
    its sha256 in ``lock_file``: a build next week puts the same files on a site."""
    wheels_dir.mkdir(parents=True, exist_ok=True)
    keep = set(own_wheels(wheels_dir, name))
    for old in wheels_dir.glob("*.whl"):
        if old not in keep:
            old.unlink()
    run_pip(*download_argv(wheels_dir, "--require-hashes", "--requirement", str(lock_file)))


def build_own_wheel(project: Path, wheels_dir: Path, name: str) -> None:
    """``pip wheel --no-deps`` the project; the old wheel goes only once the new one exists."""
    with tempfile.TemporaryDirectory(prefix="aiorch-wheel-") as tmp:
        run_pip("wheel", "--no-deps", "--wheel-dir", tmp, str(project))
        built = list(Path(tmp).glob("*.whl"))
        if len(built) != 1:
            raise UserError(f"pip wheel made {len(built)} wheels, expected one")
        for old in own_wheels(wheels_dir, name):
            old.unlink()
        wheels_dir.mkdir(parents=True, exist_ok=True)
        built[0].replace(wheels_dir / built[0].name)


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
