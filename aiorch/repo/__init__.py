"""The site repository: Debian packages and Python wheels that hosts install from, offline.

``aiorch repo build`` runs where the package registries are reachable and writes
an apt repository (``debs/``), a wheel directory (``wheels/``) and
``manifest.json``; the hub serves that directory at ``/repo/`` and the
``aiorch_site_repo`` role points every host at it.
"""

from aiorch.repo.build import build_repo
from aiorch.repo.manifest import Manifest, verify_repo

__all__ = ["Manifest", "build_repo", "verify_repo"]
