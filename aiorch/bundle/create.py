"""Create a bundle: hash the site tree, write each distinct blob once, sign the manifest last.

Everything is written into a hidden sibling directory that is renamed into place at the end, and
``manifest.sig`` is its last file, so a half-made bundle never verifies. The same inputs, version
and created time give the same manifest bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from aiorch.bundle import parts, unpack
from aiorch.bundle.keys import SigningKey
from aiorch.bundle.manifest import (
    MANIFEST,
    SIGNATURE,
    Base,
    Manifest,
    ManifestFile,
    Part,
    check_path,
)
from aiorch.bundle.sources import Contents
from aiorch.errors import UserError
from edge_agent.digest import sha256_file


@dataclass(frozen=True)
class Since:
    """The earlier bundle a delta builds on."""

    manifest: Manifest
    digest: str


def arch_of(path: str) -> str | None:
    """The architecture a file is for, read from Debian and wheel file names."""
    name = path.rsplit("/", 1)[-1]
    for token, arch in (("_amd64.", "amd64"), ("_arm64.", "arm64"), ("_all.", "all")):
        if name.endswith(".deb") and token in name:
            return arch
    if name.endswith(".whl"):
        for token, arch in (("x86_64", "amd64"), ("aarch64", "arm64"), ("-any.", "all")):
            if token in name:
                return arch
    return None


def hash_files(files: dict[str, Path]) -> tuple[ManifestFile, ...]:
    """Every file's sha256 and size, several at a time, sorted by site path."""
    paths = sorted(files)
    for p in paths:
        try:
            check_path(p)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        sums = list(pool.map(lambda p: (sha256_file(files[p]), files[p].stat().st_size), paths))
    return tuple(
        ManifestFile(p, sha, size, p.split("/", 1)[0], arch_of(p))
        for p, (sha, size) in zip(paths, sums, strict=True)
    )


def create_bundle(
    out: Path,
    key: SigningKey,
    contents: Contents,
    *,
    name: str,
    created: datetime,
    version: int | None = None,
    expires_in: timedelta = timedelta(days=365),
    since: Since | None = None,
    part_size: int | None = None,
) -> Manifest:
    """Write the bundle into ``out`` (which must not exist or be empty) and return its manifest."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not empty; choose a new --out")
    if part_size is not None and part_size <= 0:
        raise UserError("--part-size must be positive")
    version = int(created.timestamp()) if version is None else version
    contents.add(unpack.NAME, Path(unpack.__file__))  # what a bare host lays out hub/ with
    files = hash_files(contents.files)
    base: Base | None = None
    omitted: tuple[str, ...] = ()
    if since is not None:
        if version <= since.manifest.version:
            raise UserError(
                f"version {version} must be greater than the base's {since.manifest.version}"
            )
        old = {f.sha256 for f in since.manifest.files}
        omitted = tuple(sorted({f.sha256 for f in files} & old))
        base = Base(since.manifest.version, since.digest)
    manifest = Manifest(
        name=name,
        version=version,
        created=created,
        expires=created + expires_in,
        key_id=key.public.id,
        files=files,
        base=base,
        requires=dict(contents.requires),
        components=contents.components(
            {f.path: f.sha256 for f in files}, {f.path: f.size for f in files}
        ),
        omitted=omitted,
    )
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sources = {f.sha256: contents.files[f.path] for f in reversed(files)}
    shipped = [(sha, sources[sha]) for sha, _ in manifest.blobs() if sha not in set(omitted)]
    if part_size is None:
        _write_blobs(tmp, shipped)
    else:
        manifest = replace(manifest, parts=_write_parts(tmp, shipped, part_size))
    shutil.copyfile(contents.files[unpack.NAME], tmp / unpack.NAME)
    raw = manifest.to_bytes()
    (tmp / MANIFEST).write_bytes(raw)
    signature = base64.b64encode(key.sign(raw)).decode()
    (tmp / SIGNATURE).write_text(json.dumps({"key_id": key.public.id, "signature": signature}))
    if out.exists():
        out.rmdir()
    os.rename(tmp, out)
    return manifest


def _write_blobs(root: Path, shipped: list[tuple[str, Path]]) -> None:
    (root / parts.BLOBS).mkdir(parents=True)
    for sha, src in shipped:
        shutil.copyfile(src, parts.blob_path(root, sha))


def _write_parts(root: Path, shipped: list[tuple[str, Path]], part_size: int) -> tuple[Part, ...]:
    """Concatenate the blobs in manifest order and cut the stream every ``part_size`` bytes."""
    (root / parts.PARTS).mkdir()
    made: list[Part] = []
    out = None
    digest, filled = hashlib.sha256(), 0

    def close() -> None:
        nonlocal out, digest, filled
        if out is not None:
            out.close()
            made.append(Part(parts.part_name(len(made)), digest.hexdigest(), filled))
        out, digest, filled = None, hashlib.sha256(), 0

    for _, src in shipped:
        with src.open("rb") as fh:
            while chunk := fh.read(min(parts.CHUNK, part_size)):
                view = memoryview(chunk)
                while view:
                    if out is None:
                        out = (root / parts.PARTS / parts.part_name(len(made))).open("wb")
                    take = view[: part_size - filled]
                    out.write(take)
                    digest.update(take)
                    filled += len(take)
                    view = view[len(take) :]
                    if filled == part_size:
                        close()
    close()
    return tuple(made)
