"""API tokens for people and automation: admin, operator and viewer roles."""

from __future__ import annotations

import os
from typing import Any

import sqlite_utils

from aiorch.errors import Conflict, NotFound
from aiorch.hub import credentials
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit

ROLES = ("viewer", "operator", "admin")


def _insert(
    db: sqlite_utils.Database,
    minted: credentials.Minted,
    role: str,
    name: str,
    actor: str,
    now: float,
) -> None:
    db.table("api_tokens").insert(
        {
            "id": minted.id,
            "secret_hash": minted.secret_hash,
            "role": role,
            "name": name,
            "created_by": actor,
            "created_at": now,
            "revoked_at": None,
        }
    )
    audit.record(
        db, actor, "token.create", f"token:{minted.id}", {"role": role, "name": name}, ts=now
    )


def create(ctx: HubContext, role: str, name: str, actor: str) -> dict[str, Any]:
    minted = credentials.mint(credentials.API_TOKEN)
    now = ctx.clock()
    ctx.store.write(lambda db: _insert(db, minted, role, name, actor, now))
    return {"id": minted.id, "role": role, "name": name, "token": minted.token, "created_at": now}


def list_tokens(ctx: HubContext) -> list[dict[str, Any]]:
    rows = ctx.store.read().query(
        "SELECT id, role, name, created_by, created_at, revoked_at "
        "FROM api_tokens ORDER BY created_at"
    )
    return list(rows)


def revoke(ctx: HubContext, token_id: str, actor: str) -> None:
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        row = db.execute(
            "SELECT role FROM api_tokens WHERE id = ? AND revoked_at IS NULL", [token_id]
        ).fetchone()
        if row is None:
            raise NotFound(f"no active API token with id {token_id}")
        admins = db.execute(
            "SELECT COUNT(*) FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL"
        ).fetchone()[0]
        if row[0] == "admin" and admins == 1:
            raise Conflict(
                f"token {token_id} is the last active admin token; create another admin "
                "token before revoking this one"
            )
        db.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", [now, token_id])
        audit.record(db, actor, "token.revoke", f"token:{token_id}", ts=now)

    ctx.store.write(op)


def ensure_admin_token(ctx: HubContext) -> str | None:
    """On first start, mint an admin token into DATA_DIR/admin.token (0600); else do nothing."""
    path = ctx.settings.admin_token_path
    if path.exists():
        return None
    created = create(ctx, "admin", "bootstrap-admin", actor="hub")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(created["token"] + "\n")
    return str(path)
