"""API tokens: made, listed and revoked by admins, each within the projects it administers."""

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.schemas import TokenCreate
from aiorch.hub.services import authz, tokens
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/tokens", tags=["tokens"])

_ANY = authz.ANY_PROJECT


class TokenInfo(BaseModel):
    id: str
    name: str
    global_admin: bool
    roles: dict[str, str]  # project -> role, only the projects the caller administers
    created_by: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None


class TokenCreated(BaseModel):
    id: str
    name: str
    global_admin: bool
    roles: dict[str, str]
    created_at: float
    expires_at: float | None
    token: str  # shown once; the hub keeps only its hash


@router.post("", status_code=201, response_model=TokenCreated)
def create_token(
    body: TokenCreate,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("role.grant", _ANY)),
) -> dict:
    """A token with a role on one project (admin there needed), and/or global admin."""
    if body.global_admin:
        authz.authorize(p, "token.global_admin", authz.FLEET)
    if body.role is not None:
        authz.authorize(p, "role.grant", authz.in_project(body.project))
    return tokens.create(
        ctx, body.name, p.actor, role=body.role, project=body.project,
        global_admin=body.global_admin, ttl_s=body.expires_s,
    )  # fmt: skip


@router.get("", response_model=list[TokenInfo])
def list_tokens(
    ctx: HubContext = Depends(context), p: Principal = Depends(allow("token.read", _ANY))
) -> list[dict]:
    """Tokens with a role on a project the caller administers (every token: global admin)."""
    return tokens.list_tokens(ctx, authz.visible_projects(p, "token.read"))


@router.delete("/{token_id}", status_code=204)
def revoke_token(
    token_id: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("token.revoke", _ANY)),
) -> None:
    tokens.revoke(ctx, token_id, p)
