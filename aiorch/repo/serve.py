"""Serving a built site repository from the hub at ``/repo/``.

apt and pip only GET files, so plain static files are enough: no directory
listings (the wheel directory ships its own ``index.html``), no writes, and no
bearer token, because neither apt nor pip can send one. The content is what
``aiorch repo verify`` checked; a host trusts it because it came from its hub.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

MOUNT_PATH = "/repo"


def mount_repo(app: FastAPI, repo_dir: Path) -> None:
    """Serve ``repo_dir`` read-only under ``/repo`` (e.g. ``/repo/debs/Packages.gz``)."""
    app.mount(
        MOUNT_PATH,
        StaticFiles(directory=repo_dir, check_dir=True, follow_symlink=False),
        name="repo",
    )
