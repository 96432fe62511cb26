"""The root image's real inputs: a site repository made by the repo code from the Debian
mirror (IMAGE_PACKAGES, amd64, with the agent's wheels), built once and cached under
.data/image-cache, and the image built from it (rebuilt only when its inputs changed).

Both steps hold one lock: `make test` runs the image test and the metal lab test on two
workers, and both want the same cached files.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from aiorch.bundle import keys
from aiorch.lab.state import locked
from aiorch.metal.image import ImageFiles, build_image
from aiorch.repo.build import build_repo
from aiorch.repo.debs import default_sources
from aiorch.repo.packages import IMAGE_PACKAGES

PROJECT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("AIORCH_IMAGE_CACHE", PROJECT / ".data" / "image-cache"))
ARCHES = ("amd64",)


def _signing_key() -> keys.SigningKey:
    """One key per cache: a new key on every run would re-sign the repository each time."""
    key_dir = CACHE / "bundle-key"
    if not (key_dir / keys.KEY_FILE).exists():
        keys.generate(key_dir)
    return keys.load_signing_key(key_dir / keys.KEY_FILE)


def image_repo() -> Path:
    """The site repository holding the image's packages (refreshed where its inputs moved)."""
    out = CACHE / "repo"
    with locked(CACHE / "lock"):
        build_repo(
            out, IMAGE_PACKAGES, PROJECT, sources=default_sources(arches=ARCHES),
            arches=ARCHES, signing_key=_signing_key(),
        )  # fmt: skip
    return out


def cached_image() -> ImageFiles:
    """The root image built from that repository: what the lab deploys onto a VM's disk."""
    repo = image_repo()
    with locked(CACHE / "lock"):
        return build_image(repo, CACHE / "build")


def unpack_image(image: Path, dest: Path) -> Path:
    """The raw disk out of the ``.img.gz``, sparse where it is zeros (most of it): what the
    ramdisk's deploy writes onto a disk, as a file a VM can boot."""
    zero = bytes(1 << 20)
    with gzip.open(image, "rb") as src, dest.open("wb") as out:
        while chunk := src.read(len(zero)):
            if chunk == zero[: len(chunk)]:
                out.seek(len(chunk), os.SEEK_CUR)
            else:
                out.write(chunk)
        out.truncate()
    return dest
