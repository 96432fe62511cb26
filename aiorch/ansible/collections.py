"""Ansible collections as a set carries them: one installed `ansible_collections/` tree.

Operators give collections as built tarballs (`ansible-galaxy collection build`), as source
folders (with galaxy.yml), as folders that already are an installed tree, or as a
requirements file. Tarballs and source folders are installed with `ansible-galaxy collection
install --offline`, which reaches no server; an installed tree is copied as it is. A
requirements file needs a Galaxy server to resolve names and versions: that works only where
one is reachable (on the connected machine that builds a bundle, never inside the air gap),
and the error says so.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from aiorch.ansible.runner import condensed_error, own_tool
from aiorch.errors import InvalidInput

COLLECTIONS = "ansible_collections"
TIMEOUT_S = 600
_TARBALL_SUFFIXES = (".tar.gz", ".tgz")
_REQUIREMENTS_SUFFIXES = (".yml", ".yaml")


def install_collections(sources: Sequence[Path], dest: Path) -> Path:
    """Install every collection of `sources` into `dest`/ansible_collections; returns `dest`
    (the folder to put on ANSIBLE_COLLECTIONS_PATH). Fails naming the source at fault."""
    tree = dest / COLLECTIONS
    tree.mkdir(parents=True, exist_ok=True)
    artifacts: list[Path] = []
    for source in sources:
        if not source.exists():
            raise InvalidInput(f"collection {source}: no such file or folder")
        if (source / COLLECTIONS).is_dir() or source.name == COLLECTIONS:
            installed = source if source.name == COLLECTIONS else source / COLLECTIONS
            shutil.copytree(installed, tree, dirs_exist_ok=True, symlinks=False)
        elif _is_artifact(source):
            artifacts.append(source)
        elif source.is_file() and source.suffix in _REQUIREMENTS_SUFFIXES:
            _galaxy(["-r", str(source)], dest, offline=False, what=str(source))
        else:
            raise InvalidInput(
                f"collection {source}: give a tarball (.tar.gz), a collection folder with "
                f"galaxy.yml, an installed {COLLECTIONS}/ tree or a requirements .yml"
            )
    if artifacts:
        _galaxy(
            [str(a) for a in artifacts], dest, offline=True, what=", ".join(map(str, artifacts))
        )
    return dest


def _is_artifact(source: Path) -> bool:
    """A built tarball or a collection's source folder: what `install --offline` takes."""
    if source.is_dir():
        return (source / "galaxy.yml").is_file()
    return source.name.endswith(_TARBALL_SUFFIXES)


def _galaxy(args: list[str], dest: Path, *, offline: bool, what: str) -> None:
    argv = [own_tool("ansible-galaxy"), "collection", "install", "--force", "-p", str(dest)]
    argv += ["--offline", *args] if offline else args
    with tempfile.TemporaryDirectory(prefix="aiorch-galaxy-") as home:
        try:
            proc = subprocess.run(
                argv,
                cwd=home,
                env={"ANSIBLE_HOME": home, "ANSIBLE_NOCOLOR": "True", "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise InvalidInput(
                f"collections {what}: ansible-galaxy ran past {TIMEOUT_S} s"
            ) from None
    if proc.returncode == 0:
        return
    reason = condensed_error(proc.stderr or proc.stdout)
    if not offline:
        raise InvalidInput(
            f"requirements {what}: resolving it needs a reachable Galaxy server, and "
            f"ansible-galaxy failed ({reason}); inside an air gap give the collections as "
            "tarballs or folders (`ansible-galaxy collection download` on a connected machine)"
        )
    raise InvalidInput(f"collections {what}: ansible-galaxy could not install them: {reason}")
