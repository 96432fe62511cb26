"""Who is calling: resolve a bearer token to a principal with its roles (what it may do is
decided in `authz`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
    if row[2] is not None:
        raise Unauthorized("bearer token has been revoked")
    if row[3] is not None and row[3] <= ctx.clock():
        raise Unauthorized("bearer token has expired; ask an admin for a new one")
    if presented.kind != credentials.API_TOKEN:
        return Principal(kind="agent", id=presented.id, role="agent")
    roles = db.execute("SELECT project, role FROM token_roles WHERE token_id = ?", [presented.id])
    return Principal(
        kind="user",
        id=presented.id,
        role="admin" if row[1] else "member",
        projects=dict(roles.fetchall()),
    )


def require_agent(principal: Principal, agent_id: str) -> None:
    """An agent credential reaches only its own resources."""
    if principal.kind != "agent" or principal.id != agent_id:
        raise Forbidden(f"only agent {agent_id} may use this endpoint")
