"""The aiorch ramdisk's endpoints (aiorch/metal/contract.py). They authenticate the
machine by its step's boot token themselves, before reading the body (an unknown caller
learns nothing but 401), so they sit outside the bearer-token check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import json_body
from aiorch.hub.services import machine_deploy, machine_ramdisk
from aiorch.metal.contract import Action, ActionResult, Inventory

router = APIRouter(prefix="/ramdisk", tags=["ramdisk"])
M = TypeVar("M", bound=BaseModel)


async def _handle(
    request: Request, model: type[M], handle: Callable[[HubContext, dict[str, Any], M], Action]
) -> Action:
    ctx: HubContext = request.app.state.ctx
    header = request.headers.get("authorization")
    machine = await run_in_threadpool(machine_ramdisk.machine_for, ctx, header)
    body = model.model_validate_json(await request.body())
    return await run_in_threadpool(handle, ctx, machine, body)


@router.post("/inventory", response_model=Action, openapi_extra=json_body(Inventory))
async def inventory(request: Request) -> Action:
    return await _handle(request, Inventory, machine_ramdisk.inventory)


@router.post("/result", response_model=Action, openapi_extra=json_body(ActionResult))
async def result(request: Request) -> Action:
    return await _handle(request, ActionResult, machine_ramdisk.result)


@router.get("/image", response_class=FileResponse)
async def image(request: Request) -> FileResponse:
    """The root image this machine is being provisioned with (gzip'd raw disk)."""
    ctx: HubContext = request.app.state.ctx
    header = request.headers.get("authorization")
    machine = await run_in_threadpool(machine_ramdisk.machine_for, ctx, header)
    path = await run_in_threadpool(machine_deploy.image_file, ctx, machine)
    return FileResponse(path, media_type="application/gzip")
