"""Projects: who holds which role on each, and the policy that bounds what it reaches (the
sites and regions its replicas may be placed on, the host paths its workloads may mount).

A project named by a deployment but never created has no row and the default policy: every
site, no host path. Roles can only be granted on a project that exists. The `default` project
(made by migration m009) is where tokens and images go when no project is named.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlite_utils

from aiorch.deploy import HostView
from aiorch.errors import Conflict, NotFound
from aiorch.hub.context import HubContext, decode_json_fields
from aiorch.hub.services import audit, authz, budgets

POLICY_FIELDS = ("allowed_sites", "allowed_regions", "host_path_prefixes")
# Where tokens and images go when no project is named; its images serve every project.
DEFAULT = "default"


def create(ctx: HubContext, name: str, actor: str) -> dict[str, Any]:
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        if db.execute("SELECT 1 FROM projects WHERE name = ?", [name]).fetchone():
            raise Conflict(f"project {name} already exists")
        db.table("projects").insert({"name": name, "created_by": actor, "created_at": now})
        audit.record(db, actor, "project.create", f"project:{name}", ts=now)

    ctx.store.write(op)
    return show(ctx, name)


def list_projects(ctx: HubContext, projects: frozenset[str] | None) -> list[dict[str, Any]]:
    where, params = authz.sql_in("name", projects)
    rows = ctx.store.read().query(f"SELECT * FROM projects WHERE {where} ORDER BY name", params)
    return [decode_json_fields(row, POLICY_FIELDS) for row in rows]


def _row(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM projects WHERE name = ?", [name]))
    if not rows:
        raise NotFound(f"no project named {name}")
    return decode_json_fields(rows[0], POLICY_FIELDS)


def show(ctx: HubContext, name: str) -> dict[str, Any]:
    """The project, its policy and quota, and the tokens holding a role on it."""
    db = ctx.store.read()
    project = _row(db, name)
    quota = list(db.query("SELECT max_gpus, max_replicas FROM quotas WHERE project = ?", [name]))
    members = db.query(
        "SELECT r.token_id, t.name, r.role, r.granted_by, r.granted_at FROM token_roles r "
        "JOIN api_tokens t ON t.id = r.token_id "
        "WHERE r.project = ? AND t.revoked_at IS NULL ORDER BY r.token_id",
        [name],
    )
    return {
        **project,
        "quota": quota[0] if quota else None,
        "budget": budgets.budget(db, name, ctx.clock()),  # GPU-hours counted this period
        "members": list(members),
    }


def set_policy(ctx: HubContext, name: str, changes: dict[str, list[str]], actor: str) -> dict:
    """Replace the policy lists given in `changes`; the others stay."""
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        _row(db, name)
        for field, values in changes.items():
            assert field in POLICY_FIELDS
            db.execute(
                f"UPDATE projects SET {field} = ? WHERE name = ?", [json.dumps(values), name]
            )
        audit.record(db, actor, "project.set", f"project:{name}", changes, ts=now)

    ctx.store.write(op)
    return show(ctx, name)


def grant(ctx: HubContext, project: str, token_id: str, role: str, actor: str) -> dict:
    """Give `token_id` `role` on `project`, replacing the role it had there (only there)."""
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        _row(db, project)
        if (
            db.execute(
                "SELECT 1 FROM api_tokens WHERE id = ? AND revoked_at IS NULL", [token_id]
            ).fetchone()
            is None
        ):
            raise NotFound(f"no active API token with id {token_id}")
        db.execute(
            "INSERT INTO token_roles (token_id, project, role, granted_by, granted_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (token_id, project) DO UPDATE SET "
            "role = excluded.role, granted_by = excluded.granted_by, "
            "granted_at = excluded.granted_at",
            [token_id, project, role, actor, now],
        )
        detail = {"grantee": f"token:{token_id}", "role": role}
        audit.record(db, actor, "role.grant", f"project:{project}", detail, ts=now)

    ctx.store.write(op)
    return {"project": project, "token_id": token_id, "role": role}


def revoke(ctx: HubContext, project: str, token_id: str, actor: str) -> None:
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        gone = db.execute(
            "DELETE FROM token_roles WHERE project = ? AND token_id = ?", [project, token_id]
        ).rowcount
        if not gone:
            raise NotFound(f"token {token_id} has no role on project {project}")
        detail = {"grantee": f"token:{token_id}"}
        audit.record(db, actor, "role.revoke", f"project:{project}", detail, ts=now)

    ctx.store.write(op)


def policy(db: sqlite_utils.Database, project: str) -> dict[str, list[str]]:
    """The project's policy lists; empty for a project without a row."""
    row = db.execute(
        f"SELECT {', '.join(POLICY_FIELDS)} FROM projects WHERE name = ?", [project]
    ).fetchone()
    return {f: json.loads(v) for f, v in zip(POLICY_FIELDS, row, strict=True)} if row else {}


def allowed_host_paths(db: sqlite_utils.Database, project: str) -> list[str]:
    """The path prefixes `project`'s hostPath volumes may mount (none by default)."""
    return list(policy(db, project).get("host_path_prefixes", []))


def placeable(db: sqlite_utils.Database, project: str, hosts: Iterable[HostView]) -> list[HostView]:
    """The hosts `project` may place replicas on: on an allowed site or in an allowed region;
    every host when the project allows neither list."""
    rules = policy(db, project)
    sites = set(rules.get("allowed_sites", []))
    regions = set(rules.get("allowed_regions", []))
    if not sites and not regions:
        return list(hosts)
    return [h for h in hosts if h.site in sites or h.region in regions]
