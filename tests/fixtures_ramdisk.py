"""The ramdisk's real inputs: the RAMDISK_PACKAGES closure from the Debian mirror, downloaded
with the site repository's own code once and cached across runs (like the site repository in
fixtures_provision), and the ramdisk built from it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from aiorch.repo.debs import default_sources, download_debs
from aiorch.repo.packages import RAMDISK_PACKAGES

PROJECT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("AIORCH_RAMDISK_CACHE", PROJECT / ".data" / "ramdisk-cache"))
ARCHES = ("amd64",)


def ramdisk_debs() -> Path:
    """The closure's debs, fetched where the package list or the sources changed."""
    sources = default_sources(arches=ARCHES)
    key = hashlib.sha256(json.dumps([sorted(RAMDISK_PACKAGES), list(sources)]).encode())
    dest = CACHE / "debs" / key.hexdigest()[:16]
    if not (dest / ".complete").exists():
        download_debs(RAMDISK_PACKAGES, sources, dest, ARCHES)
        (dest / ".complete").touch()
    return dest
