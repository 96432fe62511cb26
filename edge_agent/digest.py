"""sha256 of a file, read in 1 MiB chunks: how image archives and repository files are named
and checked (the agent, the hub's site repository and the lab's payload share it)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex digest of the file at `path`."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
