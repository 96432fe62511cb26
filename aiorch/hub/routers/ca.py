"""The hub's CA: its pin and rotation phase, and the rotation itself (global admins)."""

from typing import Any, Literal

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.schemas import Strict
from aiorch.hub.services import ca_rotation
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/ca", tags=["trust"])


class RotateRequest(Strict):
    phase: Literal["init", "update_clients", "update_servers", "standby"]


@router.get("")
def show_ca(
    ctx: HubContext = Depends(context), _: Principal = Depends(allow("ca.read"))
) -> dict[str, Any]:
    return ca_rotation.show(ctx)


@router.post("/rotate")
async def rotate_ca(
    body: RotateRequest,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("ca.rotate")),
) -> dict[str, Any]:
    """Advance the CA rotation by one phase, named in the body."""
    return await run_in_threadpool(ca_rotation.advance, ctx, body.phase, p.actor)
