"""The hub's model store: weight files, content-addressed, grouped into models by digest.

A model is a name and the digest of its file list (edge_agent.contract.model), so agents can
check what they are sent. File bytes are blobs under DATA_DIR/models/blobs/sha256/<hex>,
shared by every model that holds the same content, written once and removed by the garbage
collector once no model lists them. Models come from `aiorch model push` (blob uploads, then
one registration) or from a bundle import (`register`, with files already on disk).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import sqlite_utils

from aiorch.errors import Forbidden, InvalidInput, NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, authz
from aiorch.hub.services.images import (
    BLOB_LOCK,
    receive,
    refuse_foreign,
    remove_if_older,
)
from edge_agent.contract.fields import ContractError
from edge_agent.contract.job import runnable_entries
from edge_agent.contract.model import SHA256_RE, ModelFile, check_path, model_digest


def blobs_dir(ctx: HubContext) -> Path:
    return ctx.settings.data_dir / "models" / "blobs" / "sha256"


def _tmp_dir(ctx: HubContext) -> Path:
    path = ctx.settings.data_dir / "models" / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _keep(ctx: HubContext, tmp: Path, sha256: str) -> None:
    """Move a verified temp file to its blob name, aged on the hub's clock (the GC's)."""
    final = blobs_dir(ctx) / sha256
    final.parent.mkdir(parents=True, exist_ok=True)
    now = ctx.clock()
    os.utime(tmp, (now, now))
    with BLOB_LOCK:
        os.replace(tmp, final)


def register(
    ctx: HubContext,
    name: str,
    files: list[tuple[str, Path]],
    actor: str,
    project: str = "default",
) -> str:
    """Register the model `name` from files on disk, as (path inside the model, file);
    each is hard-linked (else copied) into the blob store and hashed. Returns the digest."""
    listed = []
    for relpath, source in files:
        listed.append(_file_entry(ctx, relpath, source))
    return record(ctx, name, listed, actor, project)["digest"]


def _file_entry(ctx: HubContext, relpath: str, source: Path) -> ModelFile:
    tmp = _tmp_dir(ctx) / f"register-{os.getpid()}-{hashlib.sha256(relpath.encode()).hexdigest()}"
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem, or links not allowed
            shutil.copyfile(source, tmp)
        sha = hashlib.sha256()
        with tmp.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
        entry = ModelFile(_path(relpath), sha.hexdigest(), tmp.stat().st_size)
        _keep(ctx, tmp, entry.sha256)
    except OSError as exc:
        raise InvalidInput(f"model file {relpath}: cannot read {source}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return entry


async def store_blob(
    ctx: HubContext, sha256: str, chunks: AsyncIterator[bytes], max_bytes: int
) -> dict[str, Any]:
    """Stream one uploaded file into the blob store; refused unless its sha256 is `sha256`."""
    if not SHA256_RE.match(sha256):
        raise InvalidInput(f"{sha256!r} is not a sha256 (64 lowercase hex digits)")
    tmp = _tmp_dir(ctx) / f"upload-{os.getpid()}-{id(chunks)}"
    try:
        got, size = await receive(chunks, tmp, max_bytes, "model file")
        if got != sha256:
            raise InvalidInput(f"the upload has sha256 {got}, not {sha256}")
        _keep(ctx, tmp, sha256)
    finally:
        tmp.unlink(missing_ok=True)
    return {"sha256": sha256, "size": size}


def has_blob(ctx: HubContext, sha256: str) -> bool:
    return SHA256_RE.match(sha256) is not None and (blobs_dir(ctx) / sha256).is_file()


def record(
    ctx: HubContext, name: str, files: list[ModelFile], actor: str, project: str = "default"
) -> dict[str, Any]:
    """Register `name` as the model of `files`, whose blobs must be in the store already."""
    if not name or len(name) > 253 or any(c.isspace() or c in "@/" for c in name):
        raise InvalidInput(f"model name {name!r}: 1-253 characters, no spaces, '@' or '/'")
    if not files:
        raise InvalidInput(f"model {name} lists no files")
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise InvalidInput(f"model {name} lists a path more than once")
    for entry in files:
        blob = blobs_dir(ctx) / entry.sha256
        if not blob.is_file() or blob.stat().st_size != entry.size:
            raise InvalidInput(f"model file {entry.path}: blob {entry.sha256} is not in the store")
    digest = model_digest(files)
    size = sum(f.size for f in files)
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        refuse_foreign(
            db, "SELECT project FROM models WHERE name = ? LIMIT 1", name, project, "model"
        )
        db.execute(
            "INSERT INTO models (name, digest, project, size, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name, digest) DO UPDATE SET "
            "created_by = excluded.created_by, created_at = excluded.created_at",
            [name, digest, project, size, actor, now],
        )
        db.conn.executemany(
            "INSERT INTO model_files (digest, path, sha256, size) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(digest, path) DO NOTHING",
            [(digest, f.path, f.sha256, f.size) for f in files],
        )
        audit.record(db, actor, "model.register", f"model:{name}", {"digest": digest, "size": size})

    ctx.store.write(op)
    return {"name": name, "digest": digest, "project": project, "size": size, "files": len(files)}


def parse_files(raw: Iterable[dict[str, Any]]) -> list[ModelFile]:
    """A pushed file list ({path, sha256, size} each); a bad entry is a 422 naming it."""
    out = []
    for position, entry in enumerate(raw):
        sha = str(entry.get("sha256", ""))
        if not SHA256_RE.match(sha):
            raise InvalidInput(f"files[{position}].sha256 must be 64 lowercase hex digits")
        size = entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"files[{position}].size must be a whole number")
        out.append(ModelFile(_path(entry.get("path")), sha, size))
    return out


def _path(relpath: Any) -> str:
    try:
        return check_path(relpath)
    except ContractError as exc:
        raise InvalidInput(f"model file {exc}") from None


def list_models(ctx: HubContext, projects: frozenset[str] | None = None) -> list[dict[str, Any]]:
    """The models of `projects` (None: of every project), newest first per name."""
    where, params = authz.sql_in("project", projects)
    return list(
        ctx.store.read().query(
            "SELECT name, digest, project, size, created_by, created_at, "
            "(SELECT COUNT(*) FROM model_files f WHERE f.digest = m.digest) AS files "
            f"FROM models m WHERE {where} ORDER BY name, created_at DESC",
            params,
        )
    )


def files_of(
    db: sqlite_utils.Database, name: str, digest: str, projects: frozenset[str]
) -> tuple[ModelFile, ...] | None:
    """The files of model `name` at `digest`, if one of `projects` owns it; else None."""
    where, params = authz.sql_in("project", projects)
    row = db.execute(
        f"SELECT 1 FROM models WHERE name = ? AND digest = ? AND {where}", [name, digest, *params]
    ).fetchone()
    if row is None:
        return None
    return tuple(
        ModelFile(path, sha, size)
        for path, sha, size in db.execute(
            "SELECT path, sha256, size FROM model_files WHERE digest = ? ORDER BY path", [digest]
        )
    )


def agent_file(ctx: HubContext, agent_id: str, digest: str, path: str) -> Path:
    """A model file an agent may fetch: only of a model its own desired state names."""
    row = (
        ctx.store.read()
        .execute("SELECT document FROM desired_states WHERE agent_id = ?", [agent_id])
        .fetchone()
    )
    for workload in runnable_entries(json.loads(row[0])) if row else []:
        for model in workload.get("models") or []:
            if model.get("digest") != digest:
                continue
            for entry in model.get("files") or []:
                if entry.get("path") == path:
                    blob = blobs_dir(ctx) / str(entry.get("sha256"))
                    if not blob.is_file():
                        raise NotFound(f"model file {path} is not in the hub's store")
                    return blob
    raise Forbidden(f"model {digest} file {path} is not in agent {agent_id}'s desired state")


# ---- garbage collection ------------------------------------------------------------------------


def _named(db: sqlite_utils.Database) -> set[str]:
    """The model digests deployment revisions and agents' desired states name."""
    digests: set[str] = set()
    for (text,) in db.execute("SELECT spec FROM deployment_revisions"):
        try:
            spec = json.loads(text).get("spec") or {}
        except ValueError:  # a spec stored as YAML, before sealing: it predates models
            continue
        digests.update(str(m.get("digest")) for m in spec.get("models") or [])
    for (text,) in db.execute("SELECT document FROM desired_states"):
        for workload in runnable_entries(json.loads(text)):
            digests.update(str(m.get("digest")) for m in workload.get("models") or [])
    return digests


def collect_garbage(ctx: HubContext) -> dict[str, int]:
    """Scheduled job: models nothing names go once `image_gc_grace_s` has passed since they
    were registered, then the blobs no model lists (and uploads left behind) after the same."""
    cutoff = ctx.clock() - ctx.settings.image_gc_grace_s
    named = _named(ctx.store.read())

    def op(db: sqlite_utils.Database) -> list[str]:
        if _named(db) != named:
            return []  # something new names models: the next run decides
        doomed = [
            f"{name}@{digest}"
            for name, digest in db.execute(
                "SELECT name, digest FROM models WHERE created_at < ? ORDER BY created_at",
                [cutoff],
            ).fetchall()
            if digest not in named
        ][: ctx.settings.retention_batch_rows]
        for ref in doomed:
            name, _, digest = ref.partition("@")
            db.execute("DELETE FROM models WHERE name = ? AND digest = ?", [name, digest])
        db.execute("DELETE FROM model_files WHERE digest NOT IN (SELECT digest FROM models)")
        if doomed:
            audit.record(db, "hub", "model.gc", "models", {"models": doomed}, ts=ctx.clock())
        return doomed

    rows = ctx.store.write(op)
    live = {r[0] for r in ctx.store.read().execute("SELECT DISTINCT sha256 FROM model_files")}
    files = 0
    root = ctx.settings.data_dir / "models"
    for folder in (blobs_dir(ctx), root / "tmp"):
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.name not in live and not path.name.startswith("gc-"):
                files += remove_if_older(path, cutoff, _tmp_dir(ctx))
    return {k: v for k, v in (("model_rows", len(rows)), ("model_files", files)) if v}
