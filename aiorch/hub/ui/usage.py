"""GPU-hours by project and by site over a chosen period: services/accounting.py, as
/api/v1/accounting/gpu-hours answers it (projects the user holds no role in are left out)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import context
from aiorch.hub.services import accounting, authz
from aiorch.hub.ui.deps import UiUser, signed_in
from aiorch.hub.ui.render import page

router = APIRouter()

PERIODS = {"1h": 3600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}
Period = Literal["1h", "24h", "7d", "30d"]


@router.get("/gpu-hours", response_class=HTMLResponse)
def gpu_hours(
    request: Request,
    period: Period = Query("24h", description="How far back to count."),
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    authz.authorize(user.principal, "accounting.read", authz.ANY_PROJECT)
    projects = authz.visible_projects(user.principal, "accounting.read")
    since = PERIODS[period]
    tables = {by: accounting.gpu_hours(ctx, by, since, projects) for by in ("project", "site")}
    return page(
        request, "gpu_hours.html", user, tables=tables, period=period, periods=list(PERIODS)
    )
