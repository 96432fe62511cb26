"""The fleet page: sites and their hosts at a glance."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import context
from aiorch.hub.services import authz, status
from aiorch.hub.ui.deps import UiUser, signed_in
from aiorch.hub.ui.render import page

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def fleet(
    request: Request, user: UiUser = Depends(signed_in), ctx: HubContext = Depends(context)
) -> HTMLResponse:
    authz.authorize(user.principal, "fleet.status", authz.FLEET)
    overview = status.overview(ctx, authz.visible_projects(user.principal, "deployment.read"))
    return page(request, "fleet.html", user, overview=overview)
