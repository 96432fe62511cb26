"""Lay out part of a bundle's site tree as plain files, with nothing but Python's standard library.

A host inside the air gap has no aiorch yet, so it cannot verify a bundle's signature; but it
must install the hub from the bundle alone. ``bundle create`` therefore copies this module to
the bundle's top level as ``unpack.py`` (listed in the signed manifest like every file, so
``aiorch bundle verify`` checks it too), and on the bare host::

    python3 BUNDLE/unpack.py DEST hub/ repo/debs/
    bash DEST/hub/install-hub.sh

writes those folders of the site tree under DEST, each file checked against the sha256 the
manifest lists for it, read from ``blobs/`` or straight out of ``parts/``. The signature is then
checked by the installed hub (``aiorch bundle verify``, ``aiorch bundle import``) before any of
the bundle is served. aiorch.bundle.parts reads parts through ``spans`` here: one layout, one home.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

CHUNK = 4 << 20
NAME = "unpack.py"


def spans(blobs: Iterable[tuple[str, int]], omitted: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Each shipped blob's (offset, size) in the parts laid end to end: the distinct blobs in
    manifest order, those a delta leaves out skipped."""
    left_out = set(omitted)
    out: dict[str, tuple[int, int]] = {}
    offset = 0
    for sha, size in blobs:
        if sha not in left_out and sha not in out:
            out[sha] = (offset, size)
            offset += size
    return out


def _distinct(files: list[dict[str, object]]) -> list[tuple[str, int]]:
    seen: dict[str, int] = {}
    for entry in files:
        seen.setdefault(str(entry["sha256"]), int(str(entry["size"])))
    return list(seen.items())


def _read(
    root: Path, parts: list[dict[str, object]], laid: dict[str, tuple[int, int]], sha: str
) -> Iterable[bytes]:
    """A blob's bytes: its file under blobs/, or its span (`laid`) out of the parts."""
    if not parts:
        with open(root / "blobs" / "sha256" / sha, "rb") as fh:
            while chunk := fh.read(CHUNK):
                yield chunk
        return
    offset, remaining = laid[sha]
    start = 0
    for part in parts:
        end = start + int(str(part["size"]))
        if remaining and offset < end:
            with open(root / "parts" / str(part["name"]), "rb") as fh:
                fh.seek(offset - start)
                take = min(remaining, end - offset)
                while take:
                    chunk = fh.read(min(CHUNK, take))
                    if not chunk:
                        raise OSError(f"part {part['name']} ends early")
                    yield chunk
                    take -= len(chunk)
                    offset += len(chunk)
                    remaining -= len(chunk)
        start = end


def unpack(root: Path, dest: Path, prefixes: list[str]) -> int:
    """Write the site-tree files under ``prefixes`` to ``dest``; returns how many. A file whose
    bytes do not match the manifest is never left in place."""
    manifest = json.loads((root / "manifest.json").read_bytes())
    parts = manifest.get("parts") or []
    laid = spans(_distinct(manifest["files"]), manifest.get("omitted") or []) if parts else {}
    count = 0
    for entry in manifest["files"]:
        path = str(entry["path"])
        if not any(path.startswith(p) for p in prefixes):
            continue
        if path.startswith("/") or ".." in path.split("/"):
            raise SystemExit(f"unpack: {path!r} escapes the tree")
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for chunk in _read(root, parts, laid, entry["sha256"]):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != entry["sha256"]:
            tmp.unlink()
            raise SystemExit(f"unpack: sha256 mismatch for {path}: the bundle is damaged")
        if path.endswith(".sh"):
            os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        count += 1
    return count


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python3 unpack.py DEST PREFIX... (e.g. hub/ repo/debs/)", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parent
    count = unpack(root, Path(argv[0]), argv[1:])
    if count == 0:
        print(f"unpack: nothing in the bundle under {' '.join(argv[1:])}", file=sys.stderr)
        return 1
    print(f"unpacked {count} files into {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
