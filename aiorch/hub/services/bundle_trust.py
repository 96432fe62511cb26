"""The keys this hub trusts to sign content bundles: add, list, remove, each one audited.

Rotation is add the new key, import a bundle signed by it, remove the old one. Removing the
last trusted key while content is imported leaves the hub unable to take any update, so it is
refused unless forced; it is never impossible, because a key that leaked must go at once and a
hub that trusts nothing only fails closed (what it serves stays; a new key can be added later).
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from aiorch.bundle.keys import PublicKey, parse_public
from aiorch.errors import Conflict, InvalidInput, NotFound, UserError
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit

_COLUMNS = "key_id, added_by, added_at"


def add(ctx: HubContext, text: str, actor: str) -> dict[str, Any]:
    """Trust the key in a `bundle.pub`'s text; 409 when it is trusted already."""
    try:
        key = parse_public(text, "bundle public key")
    except UserError as exc:  # a local problem to the CLI; here it is the request's
        raise InvalidInput(str(exc)) from None
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        row = db.execute("SELECT removed_at FROM bundle_keys WHERE key_id = ?", [key.id]).fetchone()
        if row is not None and row[0] is None:
            raise Conflict(f"bundle key {key.id} is trusted already")
        db.execute(
            "INSERT INTO bundle_keys (key_id, public_text, added_by, added_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(key_id) DO UPDATE SET "
            "public_text = excluded.public_text, added_by = excluded.added_by, "
            "added_at = excluded.added_at, removed_by = NULL, removed_at = NULL",
            [key.id, key.to_text(), actor, now],
        )
        audit.record(db, actor, "bundle.trust.add", f"bundle-key:{key.id}", {"key_id": key.id})

    ctx.store.write(op)
    return {"key_id": key.id, "added_by": actor, "added_at": now}


def list_keys(ctx: HubContext) -> list[dict[str, Any]]:
    """The keys trusted now, oldest first."""
    return list(
        ctx.store.read().query(
            f"SELECT {_COLUMNS} FROM bundle_keys WHERE removed_at IS NULL ORDER BY added_at, key_id"
        )
    )


def trusted(db: sqlite_utils.Database) -> list[PublicKey]:
    """The keys an import verifies signatures against."""
    rows = db.execute("SELECT public_text FROM bundle_keys WHERE removed_at IS NULL").fetchall()
    return [parse_public(text, "stored bundle key") for (text,) in rows]


def remove(ctx: HubContext, key_id: str, actor: str, *, force: bool = False) -> None:
    """Stop trusting `key_id`; the last key goes only with `force` while content is imported."""

    def op(db: sqlite_utils.Database) -> None:
        rows = db.execute("SELECT key_id FROM bundle_keys WHERE removed_at IS NULL")
        active = [key for (key,) in rows]
        if key_id not in active:
            raise NotFound(f"bundle key {key_id} is not trusted")
        imported = db.execute("SELECT 1 FROM bundle_imports LIMIT 1").fetchone() is not None
        last = len(active) == 1
        if last and imported and not force:
            raise Conflict(
                f"{key_id} is the last trusted bundle key: without it this hub takes no update. "
                "Add its successor first (rotation), or force the removal (a leaked key)"
            )
        db.execute(
            "UPDATE bundle_keys SET removed_by = ?, removed_at = ? WHERE key_id = ?",
            [actor, ctx.clock(), key_id],
        )
        detail = {"key_id": key_id, **({"forced_last": True} if last and imported else {})}
        audit.record(db, actor, "bundle.trust.remove", f"bundle-key:{key_id}", detail)

    ctx.store.write(op)
