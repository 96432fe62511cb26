"""Jobs: the queue (by state, newest first), one job with its attempts, transitions and
artifacts, its log (refreshed while it runs), and cancel for those allowed to (the API's
services and authz actions, posted by htmx)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import authorize_object, context
from aiorch.hub.services import authz, jobs
from aiorch.hub.ui.deps import UiUser, posted, signed_in
from aiorch.hub.ui.paging import PageNumber, pager, window
from aiorch.hub.ui.render import page
from aiorch.jobs import states

router = APIRouter()
StateFilter = Query(None, pattern="^[a-z_]+$", max_length=32, description="Only this state.")


@router.get("/jobs", response_class=HTMLResponse)
def job_list(
    request: Request,
    state: str | None = StateFilter,
    page_number: int = PageNumber,
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    projects = authz.visible_projects(user.principal, "job.read")
    limit, offset = window(page_number)
    rows = jobs.list_jobs(ctx, projects, state=state, limit=limit, offset=offset)
    return page(
        request,
        "jobs.html",
        user,
        pager=pager(page_number, rows, state=state),
        state=state,
        states=states.STATES,
    )


def _authorized(ctx: HubContext, user: UiUser, action: str, name: str) -> authz.Resource:
    """`action` on job `name` as the API checks it (404 outside the user's projects)."""
    project = jobs.project_of(ctx, name)
    authorize_object(user.principal, action, "job", name, project)
    return authz.in_project(project, "job")


def _job_page(
    request: Request, ctx: HubContext, user: UiUser, name: str, template: str
) -> HTMLResponse:
    resource = _authorized(ctx, user, "job.read", name)
    job = jobs.show(ctx, name)
    return page(
        request,
        template,
        user,
        job=job,
        log=jobs.logs(ctx, name),
        running=job["state"] not in states.TERMINAL,
        authz_resource=resource,
    )


@router.get("/jobs/{name}", response_class=HTMLResponse)
def job_page(
    request: Request,
    name: str,
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    return _job_page(request, ctx, user, name, "job.html")


@router.get("/jobs/{name}/live", response_class=HTMLResponse)
def job_live(
    request: Request,
    name: str,
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    """The job's state and log, swapped in by htmx every few seconds while it runs."""
    return _job_page(request, ctx, user, name, "job_live.html")


@router.post("/jobs/{name}/cancel", response_class=HTMLResponse)
def job_cancel(
    request: Request,
    name: str,
    user: UiUser = Depends(posted),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    _authorized(ctx, user, "job.cancel", name)
    jobs.cancel(ctx, name, user.principal.actor)
    return _job_page(request, ctx, user, name, "job_live.html")
