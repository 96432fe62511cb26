"""The Python that sites install wheels on, and the pip commands that fetch wheels for it.

Hosts and an air-gapped hub run Debian 12's python3 (CPython 3.11, glibc 2.36) on amd64 or
arm64. Architectures are named as Debian names them, like the site's apt repository.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from aiorch.errors import UserError

PYTHON_VERSION = "3.11"
# The manylinux tags bookworm's glibc accepts, per Debian architecture, most preferred first.
PLATFORMS = {
    "amd64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64"),
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
}
ARCHES = tuple(PLATFORMS)
# The checkout `aiorch repo` and `aiorch bundle create` build from by default.
PROJECT = Path(__file__).resolve().parents[2]


def project_meta(project: Path, *extras: str) -> tuple[str, list[str]]:
    """The project's distribution name and the requirements of its base install (the agent's)
    plus those of ``extras`` (e.g. "hub"), in pyproject.toml's order."""
    try:
        data = tomllib.loads((project / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read {project}/pyproject.toml: {exc}") from None
    meta = data["project"]
    requirements = list(meta.get("dependencies", []))
    for extra in extras:
        requirements += meta.get("optional-dependencies", {}).get(extra, [])
    return str(meta["name"]), requirements


def check_arches(arches: tuple[str, ...] | list[str]) -> None:
    unknown = sorted(set(arches) - set(PLATFORMS))
    if unknown or not arches:
        raise UserError(f"unknown architecture(s) {unknown or arches}: expected {list(ARCHES)}")


def run_pip(*args: str) -> None:
    argv = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UserError(f"pip {args[0]} failed: {proc.stderr.strip()[-500:]}")


def download_argv(dest: Path, arch: str, *requirements: str) -> list[str]:
    """``pip download`` arguments for binary wheels that install on the hosts' Python on
    ``arch``; pip's markers are this machine's, so a closure differs by platform tags only."""
    platforms = [arg for p in PLATFORMS[arch] for arg in ("--platform", p)]
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
