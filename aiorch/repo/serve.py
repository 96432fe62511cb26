"""Serving a built site repository from the hub at ``/repo/``.

apt and pip only GET files, so plain static files are enough: no directory
listings (the wheel directory ships its own ``index.html``), no writes, and no
bearer token, because neither apt nor pip can send one. The content is what
``aiorch repo verify`` checked, or what a verified bundle import made current; a host trusts
it because it came from its hub (and apt, because InRelease is signed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import PlainTextResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

MOUNT_PATH = "/repo"


def mount_repo(app: FastAPI, repo_dir: Path) -> None:
    """Serve ``repo_dir`` read-only under ``/repo`` (e.g. ``/repo/debs/Packages.gz``)."""
    app.mount(
        MOUNT_PATH,
        StaticFiles(directory=repo_dir, check_dir=True, follow_symlink=False),
        name="repo",
    )


class LiveRepo:
    """Static files from the directory `locate()` names at each request, so an import that
    swaps the hub's current content takes effect without a restart; 404 while there is none."""

    def __init__(self, locate: Callable[[], Path | None]) -> None:
        self.locate = locate
        self._served: tuple[Path, StaticFiles] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        directory = self.locate()
        if directory is None:
            await PlainTextResponse("no site content imported", 404)(scope, receive, send)
            return
        served = self._served
        if served is None or served[0] != directory:
            files = StaticFiles(directory=directory, check_dir=False, follow_symlink=False)
            served = self._served = (directory, files)
        await served[1](scope, receive, send)


def mount_live_repo(app: FastAPI, locate: Callable[[], Path | None]) -> None:
    """Serve whatever directory `locate()` names now under ``/repo``."""
    app.mount(MOUNT_PATH, LiveRepo(locate), name="repo")
