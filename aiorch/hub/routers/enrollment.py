"""Enrollment tokens (global admins) and the enrollment exchange itself (agents, no bearer)."""

from typing import Any

from fastapi import APIRouter, Depends

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.schemas import EnrollRequest, EnrollTokenCreate
from aiorch.hub.services import enrollment
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/enroll-tokens", tags=["enrollment"])
public = APIRouter(tags=["enrollment"])


@router.post("", status_code=201)
def create_enroll_token(
    body: EnrollTokenCreate,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("enroll_token.create")),
) -> dict[str, Any]:
    return enrollment.create_token(ctx, body.site, body.ttl_s, body.uses, p.actor)


@router.get("")
def list_enroll_tokens(
    ctx: HubContext = Depends(context), _: Principal = Depends(allow("enroll_token.read"))
) -> list[dict]:
    return enrollment.list_tokens(ctx)


@router.delete("/{token_id}", status_code=204)
def revoke_enroll_token(
    token_id: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("enroll_token.revoke")),
) -> None:
    enrollment.revoke_token(ctx, token_id, p.actor)


@public.post("/enroll", status_code=201)
def enroll(body: EnrollRequest, ctx: HubContext = Depends(context)) -> dict[str, Any]:
    """The one route called before having a credential: the token in the body is the proof."""
    return enrollment.enroll(ctx, body.token, body.facts, body.agent_version)
