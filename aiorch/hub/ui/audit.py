"""The audit log, searchable by action, actor and target, a page at a time; the global
admin's only, as /api/v1/audit is (`audit.read`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import context
from aiorch.hub.services import audit, authz
from aiorch.hub.ui.deps import UiUser, signed_in
from aiorch.hub.ui.paging import PageNumber, pager, window
from aiorch.hub.ui.render import page

router = APIRouter()


@router.get("/audit", response_class=HTMLResponse)
def audit_log(
    request: Request,
    page_number: int = PageNumber,
    action: str | None = Query(None, max_length=200, description="rollout finds rollout.*"),
    actor: str | None = Query(None, max_length=200, description="Anywhere in the actor."),
    target: str | None = Query(None, max_length=200, description="Anywhere in the target."),
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    authz.authorize(user.principal, "audit.read", authz.FLEET)
    search = {"action": action, "actor": actor, "target": target}
    search = {key: (value or "").strip() or None for key, value in search.items()}
    limit, offset = window(page_number)
    rows = audit.list_entries(ctx, limit=limit, offset=offset, **search)
    return page(
        request, "audit.html", user, pager=pager(page_number, rows, **search), search=search
    )
