"""Who is calling: resolve a bearer token to a principal with its roles (what it may do is
decided in `authz`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlite_utils

from aiorch.errors import Forbidden, Unauthorized
from aiorch.hub import credentials
from aiorch.hub.context import HubContext


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" (API token) or "agent" (agent credential)
    id: str
    role: str  # "admin" for a global admin, "member" for other users, "agent" for agents
    # A user's role on each project it has one on; never merged across projects.
    projects: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def actor(self) -> str:
        """How the principal appears in the audit log."""
        return f"{self.kind}:{self.id}"

    @property
    def is_global_admin(self) -> bool:
        """May change what the whole fleet trusts: connection vars, projects, the CA."""
        return self.kind == "user" and self.role == "admin"


def authenticate(ctx: HubContext, authorization: str | None) -> Principal:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token (send 'Authorization: Bearer TOKEN')")
    presented = credentials.parse(token.strip())
    if presented is None or presented.kind == credentials.ENROLLMENT_TOKEN:
        raise Unauthorized("invalid bearer token")
    db = ctx.store.read()
    if presented.kind == credentials.API_TOKEN:
        row = db.execute(
            "SELECT secret_hash, global_admin, revoked_at, expires_at FROM api_tokens WHERE id = ?",
            [presented.id],
        ).fetchone()
    else:
        row = db.execute(
            "SELECT secret_hash, 0, revoked_at, NULL FROM agents WHERE id = ?", [presented.id]
        ).fetchone()
    if row is None or not credentials.matches(presented, row[0]):
        raise Unauthorized("invalid bearer token")
    _check_live(ctx, revoked_at=row[2], expires_at=row[3])
    if presented.kind != credentials.API_TOKEN:
        return Principal(kind="agent", id=presented.id, role="agent")
    return _user(db, presented.id, global_admin=bool(row[1]))


def user_by_token_id(ctx: HubContext, token_id: str) -> Principal:
    """The user behind an API token already proven once (a dashboard session): checked again
    on every request, so revoking or expiring the token ends its sessions at once."""
    db = ctx.store.read()
    row = db.execute(
        "SELECT global_admin, revoked_at, expires_at FROM api_tokens WHERE id = ?", [token_id]
    ).fetchone()
    if row is None:
        raise Unauthorized("the token behind this session no longer exists")
    _check_live(ctx, revoked_at=row[1], expires_at=row[2])
    return _user(db, token_id, global_admin=bool(row[0]))


def _check_live(ctx: HubContext, revoked_at: float | None, expires_at: float | None) -> None:
    if revoked_at is not None:
        raise Unauthorized("bearer token has been revoked")
    if expires_at is not None and expires_at <= ctx.clock():
        raise Unauthorized("bearer token has expired; ask an admin for a new one")


def _user(db: sqlite_utils.Database, token_id: str, global_admin: bool) -> Principal:
    roles = db.execute("SELECT project, role FROM token_roles WHERE token_id = ?", [token_id])
    return Principal(
        kind="user",
        id=token_id,
        role="admin" if global_admin else "member",
        projects=dict(roles.fetchall()),
    )


def require_agent(principal: Principal, agent_id: str) -> None:
    """An agent credential reaches only its own resources."""
    if principal.kind != "agent" or principal.id != agent_id:
        raise Forbidden(f"only agent {agent_id} may use this endpoint")
