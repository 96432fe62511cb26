"""The fleet page: sites with their hosts by state and their GPUs' current utilization, and
the fragment htmx swaps in every few seconds so the counts stay live without a reload."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import context
from aiorch.hub.services import authz, fleet_page
from aiorch.hub.ui.deps import UiUser, signed_in
from aiorch.hub.ui.render import page

router = APIRouter()
REFRESH_S = 10  # how often the page asks for fresh counts


def _summary(request: Request, template: str, user: UiUser, ctx: HubContext) -> HTMLResponse:
    authz.authorize(user.principal, "fleet.status", authz.FLEET)
    summary = fleet_page.summary(ctx)
    return page(request, template, user, summary=summary, refresh_s=REFRESH_S)


@router.get("/", response_class=HTMLResponse)
def fleet(
    request: Request, user: UiUser = Depends(signed_in), ctx: HubContext = Depends(context)
) -> HTMLResponse:
    return _summary(request, "fleet.html", user, ctx)


@router.get("/fleet/summary", response_class=HTMLResponse)
def fleet_summary(
    request: Request, user: UiUser = Depends(signed_in), ctx: HubContext = Depends(context)
) -> HTMLResponse:
    """The counts alone, for htmx to swap into the fleet page."""
    return _summary(request, "fleet_summary.html", user, ctx)
