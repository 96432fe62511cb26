"""Deployments: the list, one deployment's replicas by state and its rollout, and the
operator's pause, resume and undo (the API's services and authz actions, posted by htmx)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from aiorch.errors import Conflict
from aiorch.hub.context import HubContext
from aiorch.hub.routers.deployments import ROLLOUT_ACTIONS
from aiorch.hub.routers.deps import authorize_object, context
from aiorch.hub.services import authz, deployment_views, rollouts
from aiorch.hub.ui.deps import UiUser, posted, signed_in
from aiorch.hub.ui.paging import PageNumber, pager, window
from aiorch.hub.ui.render import page

router = APIRouter()


@router.get("/deployments", response_class=HTMLResponse)
def deployment_list(
    request: Request,
    page_number: int = PageNumber,
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    projects = authz.visible_projects(user.principal, "deployment.read")
    limit, offset = window(page_number)
    rows = deployment_views.list_deployments(ctx, projects, limit=limit, offset=offset)
    return page(request, "deployments.html", user, pager=pager(page_number, rows))


def _authorized(ctx: HubContext, user: UiUser, action: str, name: str) -> authz.Resource:
    """`action` on deployment `name` as the API checks it (404 outside the user's projects);
    returns the resource, for the page's `can(...)`."""
    project = deployment_views.project_of(ctx, name)
    authorize_object(user.principal, action, "deployment", name, project)
    return authz.in_project(project, "deployment")


def _rollout_fragment(
    request: Request,
    user: UiUser,
    status: dict[str, Any],
    resource: authz.Resource,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return page(
        request,
        "deployment_rollout.html",
        user,
        status_code,
        status=status,
        authz_resource=resource,
        error=error,
    )


@router.get("/deployments/{name}", response_class=HTMLResponse)
def deployment_page(
    request: Request,
    name: str,
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    resource = _authorized(ctx, user, "deployment.read", name)
    status = rollouts.status(ctx, name)
    states = Counter(replica["state"] for replica in status["replicas"])
    return page(
        request,
        "deployment.html",
        user,
        status=status,
        project=resource.project,
        states=sorted(states.items()),
        authz_resource=resource,
        error=None,
    )


@router.post("/deployments/{name}/rollout/{action}", response_class=HTMLResponse)
def rollout_action(
    request: Request,
    name: str,
    action: Literal["pause", "resume", "undo"],
    user: UiUser = Depends(posted),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    """The API's rollout action, answered with the rollout fragment; a refused step (409: no
    rollout to pause, already paused) shows its reason in the fragment."""
    resource = _authorized(ctx, user, "rollout.act", name)
    try:
        status = ROLLOUT_ACTIONS[action](ctx, name, user.principal.actor)
    except Conflict as exc:
        return _rollout_fragment(request, user, rollouts.status(ctx, name), resource, str(exc), 409)
    return _rollout_fragment(request, user, status, resource)
