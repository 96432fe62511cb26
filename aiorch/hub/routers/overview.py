"""Fleet overview and the audit log."""

from typing import Any

from fastapi import APIRouter, Depends, Query

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.services import audit, authz, status
from aiorch.hub.services.auth import Principal

router = APIRouter(tags=["overview"])


@router.get("/status")
def fleet_status(
    ctx: HubContext = Depends(context), p: Principal = Depends(allow("fleet.status"))
) -> dict[str, Any]:
    """The fleet, with the deployments of the projects the caller holds a role on."""
    return status.overview(ctx, authz.visible_projects(p, "deployment.read"))


@router.get("/audit")
def audit_log(
    limit: int = Query(100, ge=1, le=10_000),
    action: str | None = None,
    ctx: HubContext = Depends(context),
    _: Principal = Depends(allow("audit.read")),
) -> list[dict]:
    return audit.list_entries(ctx, limit=limit, action=action)
