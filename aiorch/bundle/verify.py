"""Verify a bundle before anything of it is used: fail closed, naming the first problem.

Order matters: the signature is checked over the raw ``manifest.json`` bytes before they are
parsed, then expiry and version, then the tree (no symlink, no file the manifest does not name),
then every byte (blob or part hashes, streamed in parallel threads: hashlib releases the GIL).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from aiorch.bundle import parts, unpack
from aiorch.bundle.keys import PublicKey
from aiorch.bundle.manifest import MANIFEST, SIGNATURE, Manifest, ManifestFile, digest_of, parse
from aiorch.errors import UserError

MAX_MANIFEST = 256 << 20


class BundleRefused(UserError):
    """A bundle that must not be used; the message names the problem in one line."""


@dataclass(frozen=True)
class VerifiedBundle:
    root: Path
    manifest: Manifest
    digest: str  # "sha256:<hex>" of the manifest.json bytes

    def open_blob(self, sha256: str) -> BinaryIO:
        """A blob's bytes, from ``blobs/`` or out of ``parts/``."""
        return parts.open_blob(self.root, self.manifest, sha256)

    def shipped(self) -> frozenset[str]:
        """The blob hashes this bundle carries (a delta leaves its base's out)."""
        return self.manifest.shipped()


def verify_bundle(
    root: Path,
    trusted: Sequence[PublicKey],
    *,
    now: datetime,
    highest_version: int | None = None,
    allow_downgrade: bool = False,
    have_blob: Callable[[str], bool] = lambda sha256: False,
    accepted_digest: str | None = None,
) -> VerifiedBundle:
    """The verified bundle at ``root``, or BundleRefused.

    ``highest_version`` is the highest version the caller accepted before, ``accepted_digest``
    that bundle's digest (the same bundle again is not a replay); ``have_blob`` says whether a
    blob a delta leaves out is already present where the bundle is going.
    """
    if root.is_symlink() or not root.is_dir():
        raise BundleRefused(f"{root}: not a bundle directory")
    raw = _read_small(root, MANIFEST)
    key = check_signature(raw, _read_small(root, SIGNATURE), trusted)
    try:
        manifest = parse(raw)
    except ValueError as exc:
        raise BundleRefused(str(exc)) from None
    digest = digest_of(raw)
    if manifest.key_id != key.id:
        raise BundleRefused(f"{MANIFEST} names key {manifest.key_id}, but {key.id} signed it")
    if now >= manifest.expires:
        raise BundleRefused(f"the bundle expired on {manifest.expires.isoformat()}")
    _check_version(manifest.version, digest, highest_version, accepted_digest, allow_downgrade)
    _check_tree(root, manifest)
    _check_bytes(root, manifest)
    missing = [sha for sha in sorted(manifest.omitted) if not have_blob(sha)]
    if missing and manifest.base is not None:
        raise BundleRefused(
            f"a delta on version {manifest.base.version} ({manifest.base.digest}); its base is "
            f"not present: import it first ({len(missing)} blobs missing)"
        )
    if missing:
        raise BundleRefused(f"blob {missing[0][:16]}.. is neither shipped nor present")
    return VerifiedBundle(root, manifest, digest)


def _read_small(root: Path, name: str) -> bytes:
    path = root / name
    if path.is_symlink() or not path.is_file():
        raise BundleRefused(f"{name} is missing (or not a plain file)")
    if path.stat().st_size > MAX_MANIFEST:
        raise BundleRefused(f"{name} is too large")
    return path.read_bytes()


def check_signature(raw: bytes, sig: bytes, trusted: Sequence[PublicKey]) -> PublicKey:
    try:
        data = json.loads(sig)
        key_id, signature = str(data["key_id"]), base64.b64decode(data["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BundleRefused(f"{SIGNATURE} is malformed") from None
    key = next((k for k in trusted if k.id == key_id), None)
    if key is None:
        raise BundleRefused(f"signed by {key_id}, which is not trusted")
    if not key.verify(signature, raw):
        raise BundleRefused(f"{SIGNATURE}: the signature does not match {MANIFEST} (altered?)")
    return key


def _check_version(
    version: int, digest: str, highest: int | None, accepted: str | None, allow: bool
) -> None:
    if highest is None or allow:
        return
    if version < highest:
        raise BundleRefused(
            f"version {version} is older than {highest}, the highest this hub accepted: "
            "a replay? --allow-downgrade"
        )
    if version == highest and digest != accepted:
        raise BundleRefused(
            f"version {version} was already accepted with another digest (this is {digest})"
        )


def _unpacker(manifest: Manifest) -> ManifestFile | None:
    """The manifest's entry for the top-level ``unpack.py`` (bundles made before it: None)."""
    return next((f for f in manifest.files if f.path == unpack.NAME), None)


def _check_tree(root: Path, manifest: Manifest) -> None:
    """Every entry expected and plain: no symlink anywhere, no file the manifest does not name."""
    if manifest.parts is None:
        files = {f"{parts.BLOBS}/{sha}" for sha in manifest.shipped()}
        dirs = {"blobs", parts.BLOBS}
    else:
        files = {f"{parts.PARTS}/{p.name}" for p in manifest.parts}
        dirs = {parts.PARTS}
    files |= {MANIFEST, SIGNATURE}
    if _unpacker(manifest) is not None:
        files.add(unpack.NAME)
    found: set[str] = set()
    for here, subdirs, names in os.walk(root):
        rel = Path(here).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        for name in sorted(subdirs + names):
            path = Path(here, name)
            entry = prefix + name
            if path.is_symlink():
                raise BundleRefused(f"a symlink in the bundle: {entry}")
            if path.is_dir():
                if entry not in dirs:
                    raise BundleRefused(f"not in the manifest: {entry}/")
            elif entry not in files or not path.is_file():
                raise BundleRefused(f"not in the manifest: {entry}")
            else:
                found.add(entry)
    absent = sorted(files - found)
    if absent:
        raise BundleRefused(f"missing from the bundle: {absent[0]}{_named(manifest, absent[0])}")


def _named(manifest: Manifest, entry: str) -> str:
    sha = entry.rsplit("/", 1)[-1]
    path = next((f.path for f in manifest.files if f.sha256 == sha), None)
    return f" ({path})" if path else ""


def _hash(path: Path, size: int) -> tuple[str, int]:
    """(sha256 hex, bytes seen); a file of the wrong size is not read at all."""
    actual = path.stat().st_size
    if actual != size:
        return "", actual
    digest, seen = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(parts.CHUNK):
            digest.update(chunk)
            seen += len(chunk)
            if seen > size:
                break
    return digest.hexdigest(), seen


def _check_bytes(root: Path, manifest: Manifest) -> None:
    """Hash every blob (or every part) against the signed manifest, several files at a time."""
    if manifest.parts is None:
        sizes = dict(manifest.blobs())
        jobs = [(f"{parts.BLOBS}/{sha}", sha, sizes[sha]) for sha in sorted(manifest.shipped())]
    else:
        jobs = [(f"{parts.PARTS}/{p.name}", p.sha256, p.size) for p in manifest.parts]
        laid = sum(span.size for span in parts.spans(manifest).values())
        if laid != sum(p.size for p in manifest.parts):
            raise BundleRefused(f"{MANIFEST}: the parts do not add up to the blobs they carry")
    if (unpacker := _unpacker(manifest)) is not None:  # the bare host's copy, checked too
        jobs.append((unpack.NAME, unpacker.sha256, unpacker.size))
    workers = min(8, os.cpu_count() or 1, max(1, len(jobs)))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda job: _hash(root / job[0], job[2]), jobs)
        for (entry, sha, size), (got, seen) in zip(jobs, results, strict=True):
            what = entry.removeprefix(f"{parts.PARTS}/")
            if seen != size:
                state = "truncated" if seen < size else "too long"
                label = f"part {what}" if manifest.parts else entry + _named(manifest, entry)
                raise BundleRefused(f"{label} is {state}: {seen} of {size} bytes")
            if got != sha:
                label = f"part {what}" if manifest.parts else entry + _named(manifest, entry)
                raise BundleRefused(f"sha256 mismatch: {label}")
