"""Importing a signed content bundle from the hub's own disk, fail-closed and atomically.

Order: verify everything (aiorch.bundle.verify: signature against the trusted keys, expiry,
version against the highest ever accepted, every hash, no extra file, no escaping path, a
delta's base present) -> copy the blobs the store lacks, re-hashing them -> build the release
tree -> run the IMPORT_HOOKS -> one write: the hooks' registrations, the import's row, its audit
entries and the swap of `current`. A failure before that write leaves the content the hub
serves, and every registry, as it was. Imports run one at a time (ContentStore.locked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from aiorch.bundle.verify import VerifiedBundle, verify_bundle
from aiorch.errors import Conflict, InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, bundle_trust, images, models, playbook_sets
from aiorch.hub.services.content_store import ContentStore
from aiorch.repo.debs import KEYRING_FILE

log = logging.getLogger("aiorch.hub")

WriteOp = Callable[[sqlite_utils.Database], None]
# A hook registers one kind of component of a bundle about to become current: it does its
# file work now (under the release tree `release`) and returns the write that makes it
# visible, committed with the swap; it raises (a domain error) to refuse the import.
ImportHook = Callable[[HubContext, VerifiedBundle, Path, str], WriteOp | None]

KEYRING = f"repo/debs/{KEYRING_FILE}"  # in the release tree (aiorch repo build)
RELEASES_KEPT = 2  # the current release and the one before it (a delta's likely base)
_NEWEST = "is_current DESC, imported_at DESC, version DESC"  # the current import first


def content_store(ctx: HubContext) -> ContentStore:
    return ContentStore(ctx.settings.data_dir / "content")


def register_images(
    ctx: HubContext, bundle: VerifiedBundle, release: Path, actor: str
) -> WriteOp | None:
    """The bundle's image archives into the hub's image store (project default)."""
    ops = [
        images.register_file(ctx, image.ref, release / image.path, actor, digest=image.digest)
        for image in bundle.manifest.components.images
    ]
    return _all(ops) if ops else None


def register_models(
    ctx: HubContext, bundle: VerifiedBundle, release: Path, actor: str
) -> WriteOp | None:
    """The bundle's models into the hub's model store (project default), by the digest the
    bundle names them with. The model store writes its own rows: a model nothing names yet is
    harmless if the import fails after this."""
    for model in bundle.manifest.components.models:
        prefix = f"models/{model.name}/"
        files = [(path.removeprefix(prefix), release / path) for path in model.files]
        digest = models.register(ctx, model.name, files, actor)
        if digest != model.digest:
            raise InvalidInput(f"model {model.name}: the files give {digest}, not {model.digest}")
    return None


def register_playbook_sets(
    ctx: HubContext, bundle: VerifiedBundle, release: Path, actor: str
) -> WriteOp | None:
    """The bundle's playbook sets, each with the bundle's one collections tree. Last of the
    hooks: registering makes a set's new version the one runs use."""
    collections = release / "collections"
    for found in bundle.manifest.components.playbook_sets:
        playbook_sets.register(
            ctx,
            found.name,
            release / found.root,
            collections if collections.is_dir() else None,
            actor,
        )
    return None


IMPORT_HOOKS: list[ImportHook] = [register_images, register_models, register_playbook_sets]


def import_bundle(
    ctx: HubContext, path: str, actor: str, *, allow_downgrade: bool = False
) -> dict[str, Any]:
    """Import the bundle in directory `path` (on the hub's disk) and make it current."""
    root = Path(path)
    if not root.is_absolute():
        raise InvalidInput(f"bundle path {path!r} must be absolute (a directory on the hub)")
    if not root.is_dir():
        raise InvalidInput(f"{path}: no such directory on the hub")
    store = content_store(ctx)
    with store.locked():
        db = ctx.store.read()
        keys = bundle_trust.trusted(db)
        if not keys:
            raise Conflict("this hub trusts no bundle key: `aiorch bundle trust add PUB` first")
        top = db.execute(
            "SELECT version, digest FROM bundle_imports ORDER BY version DESC LIMIT 1"
        ).fetchone()
        highest, accepted = (None, None) if top is None else top
        bundle = verify_bundle(
            root,
            keys,
            now=datetime.fromtimestamp(ctx.clock(), UTC),
            highest_version=highest,
            allow_downgrade=allow_downgrade,
            have_blob=store.has_blob,
            accepted_digest=accepted,
        )
        current = store.current_release()
        if current is not None and f"sha256:{current.name}" == bundle.digest:
            raise Conflict(f"bundle {bundle.digest} is the hub's current content already")
        store.copy_blobs(bundle)
        release = store.build_release(bundle)
        ops = [op for hook in IMPORT_HOOKS if (op := hook(ctx, bundle, release, actor))]
        downgrade = highest is not None and bundle.manifest.version < highest
        row = _row(bundle, actor, ctx.clock(), downgrade=downgrade)

        def op(db: sqlite_utils.Database) -> None:
            for each in ops:
                each(db)
            _record(db, row, highest)
            store.swap(release)  # last: a failed swap rolls the records back with it

        ctx.store.write(op)
        _prune(ctx, store)
    return {**row, "downgrade": bool(row["downgrade"]), "current": True}


def _row(bundle: VerifiedBundle, actor: str, now: float, *, downgrade: bool) -> dict[str, Any]:
    manifest = bundle.manifest
    return {
        "digest": bundle.digest,
        "name": manifest.name,
        "version": manifest.version,
        "key_id": manifest.key_id,
        "expires": _iso(manifest.expires),
        "imported_by": actor,
        "imported_at": now,
        "downgrade": int(downgrade),
    }


def _record(db: sqlite_utils.Database, row: dict[str, Any], highest: int | None) -> None:
    db.execute("UPDATE bundle_imports SET is_current = 0 WHERE is_current = 1")
    db.execute(
        "INSERT INTO bundle_imports (digest, name, version, key_id, expires, imported_by, "
        "imported_at, downgrade, is_current) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) "
        "ON CONFLICT(digest) DO UPDATE SET imported_by = excluded.imported_by, "
        "imported_at = excluded.imported_at, downgrade = excluded.downgrade, is_current = 1",
        [row[k] for k in ("digest", "name", "version", "key_id", "expires", "imported_by",
                          "imported_at", "downgrade")],
    )  # fmt: skip
    detail = {k: row[k] for k in ("digest", "key_id", "version", "name")}
    actor, target, now = row["imported_by"], f"bundle:{row['name']}", row["imported_at"]
    audit.record(db, actor, "bundle.import", target, detail, ts=now)
    if row["downgrade"]:
        detail["highest_version"] = highest
        audit.record(db, actor, "bundle.downgrade", target, detail, ts=now)


def _prune(ctx: HubContext, store: ContentStore) -> None:
    """Keep the newest RELEASES_KEPT imports' trees; an error here never fails the import."""
    kept = ctx.store.read().execute(
        f"SELECT digest FROM bundle_imports ORDER BY {_NEWEST} LIMIT ?",
        [RELEASES_KEPT],
    )
    try:
        store.prune(digest for (digest,) in kept.fetchall())
    except OSError:
        log.exception("could not prune old bundle releases")


def _all(ops: list[WriteOp]) -> WriteOp:
    def op(db: sqlite_utils.Database) -> None:
        for each in ops:
            each(db)

    return op


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if isinstance(value, datetime) else str(value)


def list_imports(ctx: HubContext) -> list[dict[str, Any]]:
    """Every import: the current one first, then the newest first."""
    rows = ctx.store.read().query(f"SELECT * FROM bundle_imports ORDER BY {_NEWEST}")
    return [_shown(r) for r in rows]


def current(ctx: HubContext) -> dict[str, Any] | None:
    """The import `current` points at, with its age: what `aiorch status` shows."""
    release = content_store(ctx).current_release()
    if ctx.repo_dir is not None or release is None:
        return None
    found = list(
        ctx.store.read().query(
            "SELECT * FROM bundle_imports WHERE digest = ?", [f"sha256:{release.name}"]
        )
    )
    if not found:
        return None
    shown = _shown(found[0])
    return {**shown, "age_s": max(0.0, ctx.clock() - shown["imported_at"])}


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    shown = {k: v for k, v in row.items() if k != "is_current"}
    return {**shown, "downgrade": bool(row["downgrade"]), "current": bool(row["is_current"])}


def served_repo(ctx: HubContext) -> Path | None:
    """The current release's repo/ tree, which the hub serves at /repo (None: nothing)."""
    release = content_store(ctx).current_release()
    return release / "repo" if release is not None and (release / "repo").is_dir() else None


def run_vars(ctx: HubContext) -> dict[str, Any]:
    """Extra vars for every run while imported content is served: where the site repo's
    keyring lies on the hub, and which release the hosts are given (none with `--repo`)."""
    if ctx.repo_dir is not None:  # `hub serve --repo DIR`: that repository's keyring only
        keyring = ctx.repo_dir / "debs" / KEYRING_FILE
        return {"aiorch_site_repo_keyring_file": str(keyring)} if keyring.is_file() else {}
    shown = current(ctx)
    release = content_store(ctx).current_release()
    if shown is None or release is None:
        return {}
    extra = {
        "aiorch_site_repo_release_version": shown["version"],
        "aiorch_site_repo_release_digest": shown["digest"],
    }
    if (release / KEYRING).is_file():
        extra["aiorch_site_repo_keyring_file"] = str(release / KEYRING)
    return extra
