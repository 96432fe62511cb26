"""The hub's image store: OCI/docker archives, content-addressed by the sha256 of the file.

There is no registry at an air-gapped site. `aiorch image push FILE` uploads an archive
here; agents download the archives their desired state names and check the digest before
`podman load`. Files live under DATA_DIR/images/sha256/<hex>, written once, never changed,
until the garbage collector removes those nothing names any more.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import sqlite_utils

from aiorch.deploy.yaml_source import load_mapping
from aiorch.errors import Conflict, Forbidden, InvalidInput, NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, authz
from edge_agent.contract.image import parse_image
from edge_agent.contract.job import runnable_entries

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")

# Held while a push renames its upload into place and while the collector takes a blob
# away, so that a blob pushed again at that moment is never lost.
BLOB_LOCK = threading.Lock()


async def receive(
    chunks: AsyncIterator[bytes], dest: Path, max_bytes: int, what: str
) -> tuple[str, int]:
    """Stream an upload into `dest` while hashing it: (sha256 hex, size). Over `max_bytes` is
    refused as soon as it is; the caller removes `dest` whatever happens. Images and models
    upload this way."""
    digest, size = hashlib.sha256(), 0
    with dest.open("wb") as fh:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise InvalidInput(f"{what} over the limit of {max_bytes} bytes")
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest(), size


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
    ctx: HubContext,
    ref: str,
    chunks: AsyncIterator[bytes],
    actor: str,
    max_bytes: int,
    *,
    project: str = "default",
) -> dict[str, Any]:
    """Stream an upload to disk while hashing it; keep it under its digest, as `project`'s
    (a reference another project owns is refused, never taken over)."""
    ref = normalise(ref)
    tmp_dir = ctx.settings.data_dir / "images" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"upload-{os.getpid()}-{id(chunks)}"
    try:
        hexdigest, size = await receive(chunks, tmp, max_bytes, "image archive")
        if size == 0:
            raise InvalidInput("image archive is empty")
        name = f"sha256:{hexdigest}"
        final = blob_path(ctx, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        now = ctx.clock()
        os.utime(tmp, (now, now))  # the blob's age, on the clock its row and the GC use
        with BLOB_LOCK:
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)

    await ctx.store.awrite(_naming(ref, name, size, actor, now, project, "image.push"))
    return {"ref": ref, "digest": name, "size": size}


def register_file(
    ctx: HubContext, ref: str, path: Path, actor: str, project: str = "default", *, digest: str
) -> Callable[[sqlite_utils.Database], None]:
    """Keep a file whose sha256 is already checked (a bundle's image archive) under its
    digest now, and return the write that names it `ref`, for the caller to commit with its
    own change: the bundle import commits it with its swap, so a failed import names nothing."""
    ref = normalise(ref)
    if not DIGEST.match(digest):
        raise InvalidInput(f"image {ref}: {digest!r} is not a sha256 digest")
    final = blob_path(ctx, digest)
    final.parent.mkdir(parents=True, exist_ok=True)
    now = ctx.clock()
    with BLOB_LOCK:  # a collector never takes a blob between its link and its fresh age
        if not final.exists():
            os.link(path, final)
        os.utime(final, (now, now))
    return _naming(ref, digest, final.stat().st_size, actor, now, project, "image.import")


def refuse_foreign(
    db: sqlite_utils.Database, owner_sql: str, name: str, project: str, what: str
) -> None:
    """A name another project owns is refused, never taken over (images and models alike);
    `owner_sql` selects the owning project of `name`."""
    owner = db.execute(owner_sql, [name]).fetchone()
    if owner is not None and owner[0] != project:
        raise Conflict(f"{what} {name} belongs to another project; push it under another name")


def _naming(
    ref: str, digest: str, size: int, actor: str, now: float, project: str, action: str
) -> Callable[[sqlite_utils.Database], None]:
    """The write that points `ref` at `digest` (a reference another project owns is
    refused, never taken over), audited as `action`."""

    def op(db: sqlite_utils.Database) -> None:
        refuse_foreign(db, "SELECT project FROM images WHERE ref = ?", ref, project, "image")
        db.execute(
            "INSERT INTO images (ref, digest, size, created_by, created_at, project) "
            "VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(ref) DO UPDATE SET digest = excluded.digest, size = excluded.size, "
            "created_by = excluded.created_by, created_at = excluded.created_at",
            [ref, digest, size, actor, now, project],
        )
        audit.record(db, actor, action, f"image:{ref}", {"digest": digest, "size": size})

    return op


def list_images(ctx: HubContext, projects: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """The images of `projects` (None: of every project)."""
    where, params = authz.sql_in("project", projects)
    return list(ctx.store.read().query(f"SELECT * FROM images WHERE {where} ORDER BY ref", params))


def resolve(db: sqlite_utils.Database, ref: str) -> dict[str, Any] | None:
    """The stored image for a reference, by `name:tag` or by `...@sha256:...`; `db` is the
    writer's when publishing, so it sees the transaction's own changes."""
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
    entries = runnable_entries(json.loads(row[0])) if row else []
    if not any((w.get("image") or {}).get("digest") == digest for w in entries):
        raise Forbidden(f"image {digest} is not in agent {agent_id}'s desired state")
    path = blob_path(ctx, digest)
    if not path.exists():
        raise NotFound(f"image {digest} is not in the hub's store")
    return path


# ---- garbage collection ------------------------------------------------------------------------

# Moves whenever a desired state or a revision is written: the collector deletes rows only if
# nothing came to name an image since it looked.
_NAMING_MARK = (
    "SELECT (SELECT COALESCE(SUM(revision), 0) FROM desired_states), "
    "(SELECT COUNT(*) FROM deployment_revisions), "
    "(SELECT COALESCE(MAX(created_at), 0) FROM deployment_revisions)"
)


def _names_in_use(db: sqlite_utils.Database) -> tuple[set[str], set[str]]:
    """The image references the deployments' revisions name, and the digests they and the
    agents' desired states name."""
    refs: set[str] = set()
    digests: set[str] = set()
    for (text,) in db.execute("SELECT spec FROM deployment_revisions"):
        name, _, digest = _spec_image(text).partition("@")
        if digest:
            digests.add(digest)
        elif name:
            refs.add(normalise(name))
    for (text,) in db.execute("SELECT document FROM desired_states"):
        for workload in runnable_entries(json.loads(text)):
            if named := (workload.get("image") or {}).get("digest"):
                digests.add(named)
    return refs, digests


def _spec_image(text: str) -> str:
    """The image a stored spec names: JSON, or the YAML of a spec stored before sealing."""
    try:
        document = json.loads(text)
    except ValueError:
        document = load_mapping(text)
    return str((document.get("spec") or {}).get("image") or "")


def collect_garbage(ctx: HubContext) -> dict[str, int]:
    """Scheduled job: images that no revision and no desired state names go, rows and files,
    once `image_gc_grace_s` has passed since their push (a fresh push waits for its first
    apply; an upload still being written is never touched). Uploads left by a hub that died
    mid-push go after the same grace."""
    cutoff = ctx.clock() - ctx.settings.image_gc_grace_s
    limit = ctx.settings.retention_batch_rows
    db = ctx.store.read()
    mark = tuple(db.execute(_NAMING_MARK).fetchone())
    refs, digests = _names_in_use(db)

    def op(db: sqlite_utils.Database) -> list[str]:
        if tuple(db.execute(_NAMING_MARK).fetchone()) != mark:
            return []  # something new names images: the next run decides
        old = db.execute(
            "SELECT ref, digest FROM images WHERE created_at < ? ORDER BY created_at", [cutoff]
        ).fetchall()
        doomed = [ref for ref, digest in old if ref not in refs and digest not in digests]
        doomed = doomed[:limit]
        db.conn.executemany("DELETE FROM images WHERE ref = ?", [(ref,) for ref in doomed])
        if doomed:
            audit.record(db, "hub", "image.gc", "images", {"refs": doomed}, ts=ctx.clock())
        return doomed

    rows = ctx.store.write(op)
    live = digests | {r[0] for r in ctx.store.read().execute("SELECT digest FROM images")}
    root = ctx.settings.data_dir / "images"
    unnamed = (
        path
        for folder in ("sha256", "tmp")
        if (root / folder).is_dir()
        for path in sorted((root / folder).iterdir())
        if not (folder == "sha256" and f"sha256:{path.name}" in live)
    )
    files = 0
    for path in unnamed:
        if files >= limit:
            break
        files += remove_if_older(path, cutoff, root / "tmp")
    return {k: v for k, v in (("image_rows", len(rows)), ("image_files", files)) if v}


def remove_if_older(path: Path, cutoff: float, trash_dir: Path) -> bool:
    """Remove `path` if it was last written before `cutoff`; the check and the move out of
    the way happen under the lock a push renames under, the slow unlink after it."""
    trash = trash_dir / f"gc-{path.name}"
    with BLOB_LOCK:
        try:
            if path.stat().st_mtime >= cutoff:
                return False
            os.replace(path, trash)
        except FileNotFoundError:
            return False
    trash.unlink(missing_ok=True)
    return True
