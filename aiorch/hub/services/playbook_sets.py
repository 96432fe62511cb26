"""Playbook sets: aiorch's own playbooks and operators' playbooks, roles and collections, kept
side by side and versioned by content.

A set is a name plus a content digest: "sha256:" + sha256 over, for each file in sorted
relative-path order, its path and the sha256 of its bytes (playbook files under `playbooks/`,
the collections tree under `collections/`). Its files live, immutable, in
DATA_DIR/content/playbooks/<hex>/ and its collections in
DATA_DIR/content/collections/<hex>/ansible_collections/. Registering the same content again is a
no-op that makes it the name's current version again; older versions are kept, so a run in
flight keeps its files and every past run's digest still names files on disk.

Which version a name means: the one registered last (a bundle import registers in import
order, so the newest bundle's set wins, and a downgrade import brings its own back). The set
"aiorch" always exists: until some import registers an "aiorch" set it is the hub's own
playbooks folder (settings.playbooks_dir, the wheel's copy), used in place, its digest
computed when a run starts.

A set's playbooks run on the hub with the hub's rights (a play may delegate to localhost), so
only a global admin registers one; bundle import is a global admin's action too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from aiorch.ansible.collections import install_collections
from aiorch.errors import InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit

DEFAULT_SET = "aiorch"
BUILTIN = "builtin"
IMPORTED = "imported"
COLLECTIONS = "ansible_collections"
_SKIPPED_DIRS = frozenset({".git", "__pycache__"})
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(frozen=True)
class PlaybookSet:
    """One version of a set: `root` holds its playbooks (and its ansible.cfg, roles/);
    `collections` is the folder holding `ansible_collections/` (ANSIBLE_COLLECTIONS_PATH)."""

    name: str
    digest: str
    root: Path
    collections: Path | None
    source: str  # BUILTIN or IMPORTED


def check_name(name: str) -> str:
    """Set names are short lower-case words: they name folders in bundles and CLI options."""
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS or name[0] in "-.":
        raise InvalidInput(
            f"playbook set name {name!r}: use 1-64 of a-z, 0-9, '-', '_', '.' (not first)"
        )
    return name


def content_dir(ctx: HubContext) -> Path:
    return ctx.settings.data_dir / "content"


# ---- digests ---------------------------------------------------------------------------------


def tree_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relpath, path) of every regular file under `root`, sorted; a symlink or special file
    is refused (naming it) rather than followed out of the tree."""
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in [*dirs, *files]:
            path = Path(folder, name)
            if path.is_symlink():
                raise InvalidInput(f"{path}: symlinks are not allowed in playbook content")
        for name in files:
            path = Path(folder, name)
            if not path.is_file():
                raise InvalidInput(f"{path}: only regular files are allowed in playbook content")
            found.append((path.relative_to(root).as_posix(), path))
    yield from sorted(found)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def set_digest(playbooks: Path, collections: Path | None = None) -> tuple[str, int, int]:
    """("sha256:<hex>", files, bytes) of a set's playbooks folder and, when given, the folder
    holding its `ansible_collections/` tree."""
    entries = [(f"playbooks/{rel}", path) for rel, path in tree_files(playbooks)]
    if collections is not None:
        entries += [(f"collections/{rel}", path) for rel, path in tree_files(collections)]
    digest = hashlib.sha256()
    size = 0
    for rel, path in sorted(entries):
        digest.update(f"{rel}\0{_file_sha256(path)}\n".encode())
        size += path.stat().st_size
    return f"sha256:{digest.hexdigest()}", len(entries), size


# ---- registering -----------------------------------------------------------------------------


def register(
    ctx: HubContext, name: str, source_dir: Path, collections_dir: Path | None, actor: str
) -> str:
    """Store `source_dir` (and the collections tree `collections_dir`: a folder that holds
    `ansible_collections/`, or that folder itself) as a version of set `name`; its digest.

    The files are copied (hard-linked when they already sit in the hub's content store, as a
    bundle import's release tree does) into a staging folder, hashed there, and moved into
    place in one rename, so what is stored is exactly what was hashed and a failure leaves
    nothing half-written. The caller authorises: only a global admin imports content."""
    check_name(name)
    if not source_dir.is_dir():
        raise InvalidInput(f"playbook set {name}: {source_dir} is not a folder")
    tree = _collections_tree(collections_dir)
    store = content_dir(ctx)
    (store / "playbooks").mkdir(parents=True, exist_ok=True)
    (store / "collections").mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=store))
    try:
        _copy_tree(source_dir, staging / "playbooks", store)
        if tree is not None:
            _copy_tree(tree, staging / "collections" / COLLECTIONS, store)
        staged_collections = staging / "collections" if tree is not None else None
        digest, files, size = set_digest(staging / "playbooks", staged_collections)
        hexdigest = digest.removeprefix("sha256:")
        _place(staging / "playbooks", store / "playbooks" / hexdigest)
        if staged_collections is not None:
            _place(staged_collections, store / "collections" / hexdigest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        db.execute(
            "INSERT INTO playbook_sets (name, digest, collections, files, size, seq, "
            "registered_by, registered_at) VALUES (?, ?, ?, ?, ?, "
            "(SELECT COALESCE(MAX(seq), 0) + 1 FROM playbook_sets), ?, ?) "
            "ON CONFLICT (name, digest) DO UPDATE SET seq = excluded.seq",
            [name, digest, int(tree is not None), files, size, actor, now],
        )
        detail = {"digest": digest, "files": files, "collections": tree is not None}
        audit.record(db, actor, "playbook_set.register", f"playbook_set:{name}", detail, ts=now)

    ctx.store.write(op)
    return digest


def import_from(
    ctx: HubContext, name: str, source_dir: Path, collections: Sequence[Path], actor: str
) -> str:
    """`register` for an operator's folder on the hub's disk, with its collections given as
    tarballs, collection folders or installed trees (aiorch.ansible.collections). Nothing may
    come from the hub's data dir: it holds the CA's key, which a set's files could carry out."""
    data = ctx.settings.data_dir.resolve()
    for path in (source_dir, *collections):
        if path.resolve().is_relative_to(data):
            raise InvalidInput(f"{path}: playbook content may not come from the hub's data dir")
    if not collections:
        return register(ctx, name, source_dir, None, actor)
    with tempfile.TemporaryDirectory(prefix="aiorch-collections-") as scratch:
        tree = install_collections(collections, Path(scratch))
        return register(ctx, name, source_dir, tree, actor)


def _collections_tree(collections_dir: Path | None) -> Path | None:
    if collections_dir is None:
        return None
    tree = collections_dir if collections_dir.name == COLLECTIONS else collections_dir / COLLECTIONS
    if not tree.is_dir():
        raise InvalidInput(f"{collections_dir}: holds no {COLLECTIONS}/ folder")
    return tree


def _copy_tree(source: Path, dest: Path, store: Path) -> None:
    """Copy `source` to `dest`; files already in the content store are hard-linked (they are
    immutable there), anything else is copied so later edits of the source change nothing."""
    link = source.resolve().is_relative_to(store.resolve())
    for rel, path in tree_files(source):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if link:
            os.link(path, target)
        else:
            shutil.copyfile(path, target)
            target.chmod(0o555 if os.access(path, os.X_OK) else 0o444)
    dest.mkdir(parents=True, exist_ok=True)  # an empty collections tree is still a tree


def _place(staged: Path, final: Path) -> None:
    """Move `staged` to `final` unless that content is there already (same digest)."""
    if final.exists():
        return
    try:
        staged.rename(final)
    except OSError:
        if not final.exists():  # not a concurrent register of the same content
            raise


# ---- resolving -------------------------------------------------------------------------------


def resolve(ctx: HubContext, name: str | None = None) -> PlaybookSet:
    """The current version of set `name` (default "aiorch"); an unknown set is a 422 naming it."""
    name = name or DEFAULT_SET
    row = (
        ctx.store.read()
        .execute(
            "SELECT digest, collections FROM playbook_sets WHERE name = ? "
            "ORDER BY seq DESC LIMIT 1",
            [name],
        )
        .fetchone()
    )
    if row is None:
        if name == DEFAULT_SET:
            root = ctx.settings.playbooks_dir.resolve()
            return PlaybookSet(name, set_digest(root)[0], root, None, BUILTIN)
        raise InvalidInput(f"no playbook set named {name!r} (see `aiorch playbooks list`)")
    hexdigest = str(row[0]).removeprefix("sha256:")
    store = content_dir(ctx)
    collections = store / "collections" / hexdigest if row[1] else None
    return PlaybookSet(name, str(row[0]), store / "playbooks" / hexdigest, collections, IMPORTED)


def list_sets(ctx: HubContext) -> list[dict[str, Any]]:
    """Every stored version of every set, newest first per name, the current one marked; the
    built-in "aiorch" set is listed while no import has replaced it."""
    rows = list(
        ctx.store.read().query(
            "SELECT name, digest, collections, files, size, seq, registered_by, registered_at "
            "FROM playbook_sets ORDER BY name, seq DESC"
        )
    )
    current: set[str] = set()
    listed = []
    for row in rows:
        listed.append(
            {
                "name": row["name"],
                "digest": row["digest"],
                "current": row["name"] not in current,
                "source": IMPORTED,
                "collections": bool(row["collections"]),
                "files": row["files"],
                "size": row["size"],
                "registered_by": row["registered_by"],
                "registered_at": row["registered_at"],
            }
        )
        current.add(row["name"])
    if DEFAULT_SET not in current:
        digest, files, size = set_digest(ctx.settings.playbooks_dir.resolve())
        listed.insert(
            0,
            {
                "name": DEFAULT_SET,
                "digest": digest,
                "current": True,
                "source": BUILTIN,
                "collections": False,
                "files": files,
                "size": size,
                "registered_by": None,
                "registered_at": None,
            },
        )
    return sorted(listed, key=lambda s: s["name"])
