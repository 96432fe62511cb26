"""API tokens (admin only)."""

from typing import Any

from fastapi import APIRouter, Depends

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import admin, context
from aiorch.hub.schemas import TokenCreate
from aiorch.hub.services import tokens
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("", status_code=201)
def create_token(
    body: TokenCreate, ctx: HubContext = Depends(context), p: Principal = Depends(admin)
) -> dict[str, Any]:
    return tokens.create(ctx, body.role, body.name, p.actor)


@router.get("")
def list_tokens(ctx: HubContext = Depends(context), _: Principal = Depends(admin)) -> list[dict]:
    return tokens.list_tokens(ctx)


@router.delete("/{token_id}", status_code=204)
def revoke_token(
    token_id: str, ctx: HubContext = Depends(context), p: Principal = Depends(admin)
) -> None:
    tokens.revoke(ctx, token_id, p.actor)
