"""The hub's image store: OCI/docker archives, content-addressed by the sha256 of the file.

There is no registry at an air-gapped site. `aiorch image push FILE` uploads an archive
here; agents download the archives their desired state names and check the digest before
`podman load`. Files live under DATA_DIR/images/sha256/<hex>, written once, never changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlite_utils

from aiorch.errors import Forbidden, InvalidInput, NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit
from edge_agent.contract.image import parse_image

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def normalise(reference: str) -> str:
    """`name:tag` with Docker's defaults, so `model:v1` and `docker.io/library/model:v1`
    are one image; a bad reference is a 422 naming what is wrong."""
    try:
        ref = parse_image(reference)
    except ValueError as exc:
        raise InvalidInput(f"image reference {reference!r}: {exc}") from None
    return f"{ref.name}:{ref.tag or 'latest'}"


def blob_path(ctx: HubContext, digest: str) -> Path:
    return ctx.settings.data_dir / "images" / "sha256" / digest.removeprefix("sha256:")


async def store(
    ctx: HubContext, ref: str, chunks: AsyncIterator[bytes], actor: str, max_bytes: int
) -> dict[str, Any]:
    """Stream an upload to disk while hashing it; keep it under its digest."""
    ref = normalise(ref)
    tmp_dir = ctx.settings.data_dir / "images" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"upload-{os.getpid()}-{id(chunks)}"
    digest, size = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise InvalidInput(f"image archive over the limit of {max_bytes} bytes")
                digest.update(chunk)
                fh.write(chunk)
        if size == 0:
            raise InvalidInput("image archive is empty")
        name = f"sha256:{digest.hexdigest()}"
        final = blob_path(ctx, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        db.execute(
            "INSERT INTO images (ref, digest, size, created_by, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(ref) DO UPDATE SET digest = excluded.digest, size = excluded.size, "
            "created_by = excluded.created_by, created_at = excluded.created_at",
            [ref, name, size, actor, now],
        )
        audit.record(db, actor, "image.push", f"image:{ref}", {"digest": name, "size": size})

    await ctx.store.awrite(op)
    return {"ref": ref, "digest": name, "size": size}


def list_images(ctx: HubContext) -> list[dict[str, Any]]:
    return list(ctx.store.read().query("SELECT * FROM images ORDER BY ref"))


def resolve(ctx: HubContext, ref: str) -> dict[str, Any] | None:
    """The stored image for a reference, by `name:tag` or by `...@sha256:...`."""
    db = ctx.store.read()
    name, _, digest = ref.partition("@")
    rows = (
        list(db.query("SELECT * FROM images WHERE digest = ?", [digest]))
        if digest
        else list(db.query("SELECT * FROM images WHERE ref = ?", [normalise(name)]))
    )
    return rows[0] if rows else None


def agent_blob(ctx: HubContext, agent_id: str, digest: str) -> Path:
    """An archive an agent may fetch: only one its own desired state names."""
    if not DIGEST.match(digest):
        raise InvalidInput(f"{digest!r} is not a sha256 digest")
    row = (
        ctx.store.read()
        .execute("SELECT document FROM desired_states WHERE agent_id = ?", [agent_id])
        .fetchone()
    )
    workloads = json.loads(row[0]).get("workloads", []) if row else []
    if not any((w.get("image") or {}).get("digest") == digest for w in workloads):
        raise Forbidden(f"image {digest} is not in agent {agent_id}'s desired state")
    path = blob_path(ctx, digest)
    if not path.exists():
        raise NotFound(f"image {digest} is not in the hub's store")
    return path
