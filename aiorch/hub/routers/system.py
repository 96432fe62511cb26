"""Unauthenticated health probe: 503 while the store cannot take writes, so a hub whose
writer died or hangs is restarted or taken out of rotation instead of looking fine."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from aiorch.hub.context import HubContext

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    ctx: HubContext = request.app.state.ctx
    problem = ctx.store.health()
    if problem is not None:
        return JSONResponse({"status": "unavailable", "detail": problem}, status_code=503)
    return JSONResponse({"status": "ok"})
