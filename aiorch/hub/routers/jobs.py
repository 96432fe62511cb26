"""Jobs: submit, plan, list, show, logs and cancel."""

from typing import Any

from fastapi import APIRouter, Depends, Query

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, authorize_object, context
from aiorch.hub.schemas import SpecText
from aiorch.hub.services import authz, jobs
from aiorch.hub.services.auth import Principal
from aiorch.jobs.states import STATES

router = APIRouter(tags=["jobs"])

_ANY = authz.ANY_PROJECT


def _on_job(ctx: HubContext, p: Principal, action: str, name: str) -> None:
    authorize_object(p, action, "job", name, jobs.project_of(ctx, name))


@router.post("/jobs/plan")
def plan(
    body: SpecText,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("job.submit", _ANY)),
) -> dict[str, Any]:
    """Check a job spec as submit would; stores nothing."""
    return jobs.plan(ctx, body.spec, principal=p)


@router.post("/jobs", status_code=201)
def submit(
    body: SpecText,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("job.submit", _ANY)),
) -> dict[str, Any]:
    """Queue a job (`kind: Job`); the scheduling pass admits and places it."""
    return jobs.submit(ctx, body.spec, p.actor, principal=p)


@router.get("/jobs")
def list_jobs(
    project: str | None = Query(None, max_length=63),
    state: str | None = Query(None, pattern=f"^({'|'.join(STATES)})$"),
    limit: int = Query(100, ge=1, le=jobs.MAX_LIST),
    offset: int = Query(0, ge=0),
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("job.read", _ANY)),
) -> list[dict[str, Any]]:
    """The jobs of the projects the caller holds a role on, newest first."""
    visible = authz.visible_projects(p, "job.read")
    return jobs.list_jobs(ctx, visible, project, state, limit, offset)


@router.get("/jobs/{name}")
def show(
    name: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("job.read", _ANY)),
) -> dict[str, Any]:
    _on_job(ctx, p, "job.read", name)
    return jobs.show(ctx, name)


@router.get("/jobs/{name}/logs")
def logs(
    name: str,
    attempt: str | None = Query(None, max_length=128),
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("job.read", _ANY)),
) -> dict[str, Any]:
    """The end of an attempt's log (the current one by default), as its agent last sent it."""
    _on_job(ctx, p, "job.read", name)
    return jobs.logs(ctx, name, attempt)


@router.post("/jobs/{name}/cancel")
def cancel(
    name: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("job.cancel", _ANY)),
) -> dict[str, Any]:
    _on_job(ctx, p, "job.cancel", name)
    return jobs.cancel(ctx, name, p.actor)
