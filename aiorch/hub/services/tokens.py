"""API tokens for people and automation: a role per project, or global admin, and an expiry.

A token's secret is shown once, when it is made, and stored only as a hash.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import sqlite_utils

from aiorch.errors import Conflict, InvalidInput, NotFound
from aiorch.hub import credentials
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, authz
from aiorch.hub.services.auth import Principal

DEFAULT_TTL_S = 90 * 86400
MAX_TTL_S = 366 * 86400


def _insert(
    db: sqlite_utils.Database,
    minted: credentials.Minted,
    row: dict[str, Any],
    role: str | None,
    project: str,
) -> None:
    if (
        role is not None
        and db.execute("SELECT 1 FROM projects WHERE name = ?", [project]).fetchone() is None
    ):
        raise NotFound(f"no project named {project}")
    db.table("api_tokens").insert({"id": minted.id, "secret_hash": minted.secret_hash, **row})
    if role is not None:
        db.table("token_roles").insert(
            {"token_id": minted.id, "project": project, "role": role,
             "granted_by": row["created_by"], "granted_at": row["created_at"]}
        )  # fmt: skip
    detail = {"name": row["name"], "role": role, "project": project if role else None,
              "global_admin": bool(row["global_admin"]),
              "expires_at": row["expires_at"]}  # fmt: skip
    audit.record(
        db, row["created_by"], "token.create", f"token:{minted.id}", detail, ts=row["created_at"]
    )


def create(
    ctx: HubContext,
    name: str,
    actor: str,
    *,
    role: str | None = None,
    project: str = "default",
    global_admin: bool = False,
    ttl_s: float | None = DEFAULT_TTL_S,
) -> dict[str, Any]:
    """A new token with `role` on `project` and/or global admin; `ttl_s` None: no expiry
    (the bootstrap token only)."""
    if role is None and not global_admin:
        raise InvalidInput("a token needs a role on a project, or global admin")
    minted = credentials.mint(credentials.API_TOKEN)
    now = ctx.clock()
    row = {"name": name, "global_admin": int(global_admin), "created_by": actor,
           "created_at": now, "revoked_at": None,
           "expires_at": None if ttl_s is None else now + ttl_s}  # fmt: skip
    ctx.store.write(lambda db: _insert(db, minted, row, role, project))
    roles = {project: role} if role else {}
    return {"id": minted.id, "name": name, "global_admin": global_admin, "roles": roles,
            "expires_at": row["expires_at"], "created_at": now, "token": minted.token}  # fmt: skip


def list_tokens(ctx: HubContext, projects: frozenset[str] | None) -> list[dict[str, Any]]:
    """Tokens holding a role on one of `projects` (None: every token), with those roles only."""
    db = ctx.store.read()
    where, params = authz.sql_in("project", projects)
    roles: dict[str, dict[str, str]] = defaultdict(dict)
    for token_id, project, role in db.execute(
        f"SELECT token_id, project, role FROM token_roles WHERE {where}", params
    ):
        roles[token_id][project] = role
    rows = db.query(
        "SELECT id, name, global_admin, created_by, created_at, expires_at, revoked_at "
        "FROM api_tokens ORDER BY created_at, id"
    )
    return [
        {**row, "global_admin": bool(row["global_admin"]), "roles": roles.get(row["id"], {})}
        for row in rows
        if projects is None or row["id"] in roles
    ]


def _revoke(db: sqlite_utils.Database, token_id: str, principal: Principal, now: float) -> None:
    row = db.execute(
        "SELECT global_admin FROM api_tokens WHERE id = ? AND revoked_at IS NULL", [token_id]
    ).fetchone()
    held = [
        r[0] for r in db.execute("SELECT project FROM token_roles WHERE token_id = ?", [token_id])
    ]
    if row is None or not (principal.is_global_admin or any(p in principal.projects for p in held)):
        raise NotFound(f"no active API token with id {token_id}")
    if row[0] or not held:  # a global admin, or a token no project admin is responsible for
        authz.authorize(principal, "token.global_admin", authz.FLEET)
    for project in held:  # revoking a token takes it from every project it serves
        authz.authorize(principal, "token.revoke", authz.in_project(project, "token"))
    admins = db.execute(
        "SELECT COUNT(*) FROM api_tokens WHERE global_admin = 1 AND revoked_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > ?)",
        [now],
    ).fetchone()[0]
    if row[0] and admins == 1:
        raise Conflict(
            f"token {token_id} is the last active admin token; create another admin "
            "token before revoking this one"
        )
    db.execute("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", [now, token_id])
    audit.record(db, principal.actor, "token.revoke", f"token:{token_id}", ts=now)


def revoke(ctx: HubContext, token_id: str, principal: Principal) -> None:
    """Global admins revoke any token; a project admin one whose every role is on a project
    it administers (so a token serving project B is never cut off by A's admin alone)."""
    now = ctx.clock()
    ctx.store.write(lambda db: _revoke(db, token_id, principal, now))


def ensure_admin_token(ctx: HubContext) -> str | None:
    """On first start, mint a global admin token into DATA_DIR/admin.token (0600); else do
    nothing. It has no expiry: it is how the hub's owner gets back in."""
    path = ctx.settings.admin_token_path
    if path.exists():
        return None
    created = create(ctx, "bootstrap-admin", actor="hub", global_admin=True, ttl_s=None)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(created["token"] + "\n")
    return str(path)
