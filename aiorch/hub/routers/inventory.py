"""Inventory import/export, hosts and sites."""

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.schemas import InventoryImport, Strict
from aiorch.hub.services import inventory, retire
from aiorch.hub.services.auth import Principal

router = APIRouter(tags=["inventory"])


class HostRetire(Strict):
    wipe: bool = False
    confirm: str | None = None
    force: bool = False


@router.post("/inventory/import")
async def import_inventory(
    body: InventoryImport,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("inventory.import")),
) -> dict[str, Any]:
    return await run_in_threadpool(inventory.import_inventory, ctx, body.content, body.filename, p)


@router.get("/inventory/export", response_class=PlainTextResponse)
def export_inventory(
    ctx: HubContext = Depends(context), p: Principal = Depends(allow("inventory.export"))
) -> str:
    return inventory.export_inventory(ctx, p)


@router.get("/hosts")
def list_hosts(
    site: str | None = None,
    ctx: HubContext = Depends(context),
    _: Principal = Depends(allow("host.read")),
) -> list[dict]:
    return inventory.list_hosts(ctx, site)


@router.get("/hosts/{name}")
def show_host(
    name: str, ctx: HubContext = Depends(context), p: Principal = Depends(allow("host.read"))
) -> dict[str, Any]:
    return inventory.get_host(ctx, name, p)


@router.post("/hosts/{name}/retire", status_code=201)
def retire_host(
    name: str,
    body: HostRetire,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("host.retire")),
) -> dict[str, Any]:
    """Start the decommission run; the host is retired (agent revoked) when it succeeds."""
    return retire.retire_host(
        ctx, name, p.actor, wipe=body.wipe, confirm=body.confirm, force=body.force
    )


@router.get("/sites")
def list_sites(
    ctx: HubContext = Depends(context), _: Principal = Depends(allow("site.read"))
) -> list[dict]:
    return inventory.list_sites(ctx)
