"""The site tree's ``hub/``: what installs a hub on a Debian 12 host with no network.

``stage(site)`` fills ``site/hub/`` on a connected machine: ``wheels/`` (the hub's locked closure,
constraints/hub.txt, for amd64 and arm64, plus aiorch's own wheel, which carries the playbooks),
``requirements.txt`` (that lock, so the host installs exactly those versions, hash-checked) and
``install-hub.sh`` (package data beside this module). On the air-gapped host the script makes a
venv and pip-installs from ``hub/wheels`` alone, installing python3-venv and openssh-client
from the site's signed ``repo/debs`` first where they are missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from aiorch.repo import hostpython, lock, wheels
from aiorch.repo.hostpython import ARCHES, PROJECT

HUB_DIR = "hub"
INSTALLER = "install-hub.sh"
REQUIREMENTS = "requirements.txt"


def installer() -> bytes:
    """The offline installer script, as shipped in the aiorch wheel."""
    return (resources.files("aiorch.repo") / INSTALLER).read_bytes()


def stage(site: Path, arches: Sequence[str] = ARCHES, *, project: Path = PROJECT) -> list[Path]:
    """Fill ``site/hub`` (wheels, requirements.txt, install-hub.sh) and return its files.

    Wheels already there are kept when pip's hash check passes; others go. Needs PyPI."""
    hub = site / HUB_DIR
    wheels_dir = hub / "wheels"
    name, _ = hostpython.project_meta(project)
    wheels.download_hub(wheels_dir, arches, project=project)
    wheels.build_own_wheel(project, wheels_dir, name)
    shutil.copyfile(lock.lock_path(project, lock.HUB), hub / REQUIREMENTS)
    script = hub / INSTALLER
    script.write_bytes(installer())
    script.chmod(0o755)
    return sorted(p for p in hub.rglob("*") if p.is_file())
