"""Who is calling: resolve a bearer token to a principal, and check what it may do."""

from __future__ import annotations

from dataclasses import dataclass

from aiorch.errors import Forbidden, Unauthorized
from aiorch.hub import credentials
from aiorch.hub.context import HubContext

ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}


@dataclass(frozen=True)
class Principal:
    kind: str  # "user" (API token) or "agent" (agent credential)
    id: str
    role: str  # viewer/operator/admin for users, "agent" for agents

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
            "SELECT secret_hash, role, revoked_at FROM api_tokens WHERE id = ?", [presented.id]
        ).fetchone()
        kind = "user"
    else:
        row = db.execute(
            "SELECT secret_hash, 'agent', revoked_at FROM agents WHERE id = ?", [presented.id]
        ).fetchone()
        kind = "agent"
    if row is None or not credentials.matches(presented, row[0]):
        raise Unauthorized("invalid bearer token")
    if row[2] is not None:
        raise Unauthorized("bearer token has been revoked")
    return Principal(kind=kind, id=presented.id, role=row[1])


def require_role(principal: Principal, minimum: str) -> None:
    if principal.kind != "user":
        raise Forbidden("agent credentials may only use the agent's own endpoints")
    if ROLE_RANK[principal.role] < ROLE_RANK[minimum]:
        raise Forbidden(f"role '{principal.role}' may not do this; needs '{minimum}' or higher")


def require_agent(principal: Principal, agent_id: str) -> None:
    """An agent credential reaches only its own resources."""
    if principal.kind != "agent" or principal.id != agent_id:
        raise Forbidden(f"only agent {agent_id} may use this endpoint")
