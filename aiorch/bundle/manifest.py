"""``manifest.json``: the signed root of a bundle, listing every file of the site tree by sha256.

The bytes are canonical JSON (RFC 8785), so the same inputs give the same bytes and the same
bundle digest. Paths are checked here, once, for everything that reads a manifest: relative,
no ``..``, sorted and unique, so no reader can be walked out of the bundle or the site tree.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pydantic
import rfc8785

FORMAT = "aiorch-bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ManifestFile:
    path: str  # place in the site content tree, e.g. repo/debs/x.deb
    sha256: str
    size: int
    kind: str  # the top-level folder: repo, hub, playbooks, collections, images, models
    arch: str | None = None


@dataclass(frozen=True)
class Image:
    ref: str
    path: str
    digest: str  # "sha256:<hex>" of the archive file


@dataclass(frozen=True)
class Model:
    name: str
    digest: str  # "sha256:<hex>" over the sorted (path, sha256) list of its files
    files: tuple[str, ...]


@dataclass(frozen=True)
class PlaybookSet:
    name: str
    root: str


@dataclass(frozen=True)
class Collection:
    root: str


@dataclass(frozen=True)
class Components:
    images: tuple[Image, ...] = ()
    models: tuple[Model, ...] = ()
    playbook_sets: tuple[PlaybookSet, ...] = ()
    collections: tuple[Collection, ...] = ()


@dataclass(frozen=True)
class Part:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Base:
    version: int
    digest: str


@dataclass(frozen=True)
class Manifest:
    name: str
    version: int
    created: datetime
    expires: datetime
    key_id: str
    files: tuple[ManifestFile, ...]
    base: Base | None = None
    requires: dict[str, Any] = field(default_factory=dict)
    components: Components = field(default_factory=Components)
    parts: tuple[Part, ...] | None = None
    # Blobs a delta does not carry (its base has them); empty for a full bundle.
    omitted: tuple[str, ...] = ()
    format: str = FORMAT

    def blobs(self) -> Iterator[tuple[str, int]]:
        """Each distinct blob once, (sha256, size), in manifest order: the order of the parts."""
        seen: set[str] = set()
        for f in self.files:
            if f.sha256 not in seen:
                seen.add(f.sha256)
                yield f.sha256, f.size

    def shipped(self) -> frozenset[str]:
        omitted = set(self.omitted)
        return frozenset(sha for sha, _ in self.blobs() if sha not in omitted)

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["created"], data["expires"] = _iso(self.created), _iso(self.expires)
        return bytes(rfc8785.dumps(data))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_path(path: str) -> None:
    """A relative POSIX path that stays inside its root, or ValueError naming it."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        raise ValueError(f"path escapes the bundle: {path!r}")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"path escapes the bundle: {path!r}")


_ADAPTER = pydantic.TypeAdapter(Manifest)


def parse(data: bytes) -> Manifest:
    """The manifest in ``data``, or ValueError in one line naming what is wrong."""
    try:
        manifest = _ADAPTER.validate_json(data, strict=True)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"{MANIFEST} is malformed: {where}: {err['msg']}") from None
    if manifest.format != FORMAT:
        raise ValueError(f"{MANIFEST}: unknown format {manifest.format!r}")
    paths = [f.path for f in manifest.files]
    for f in manifest.files:
        check_path(f.path)
        if not _HEX.fullmatch(f.sha256) or f.size < 0:
            raise ValueError(f"{MANIFEST}: bad sha256 or size for {f.path}")
    if paths != sorted(set(paths)):
        raise ValueError(f"{MANIFEST}: files are not sorted and unique")
    for p in manifest.parts or ():
        if not re.fullmatch(r"part-\d{4,}", p.name) or not _HEX.fullmatch(p.sha256):
            raise ValueError(f"{MANIFEST}: bad part entry {p.name!r}")
    known = {f.sha256 for f in manifest.files}
    if not set(manifest.omitted) <= known:
        raise ValueError(f"{MANIFEST}: omits a blob no file names")
    return manifest
