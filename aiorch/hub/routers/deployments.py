"""Deployments (plan, apply, list, show, delete), images and project quotas."""

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from aiorch.deploy.spec import DnsLabel
from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import OCTET_STREAM_BODY, allow, authorize_object, context
from aiorch.hub.schemas import QuotaUpdate, SpecText
from aiorch.hub.services import (
    authz,
    budgets,
    deployment_views,
    deployments,
    images,
    rollouts,
)
from aiorch.hub.services.auth import Principal

router = APIRouter(tags=["deployments"])

_ANY = authz.ANY_PROJECT


def _on_deployment(ctx: HubContext, p: Principal, action: str, name: str) -> None:
    authorize_object(p, action, "deployment", name, deployment_views.project_of(ctx, name))


@router.post("/deployments/plan")
def plan(
    body: SpecText,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("deployment.apply", _ANY)),
) -> dict[str, Any]:
    """What apply would change, and the policy decisions; changes nothing."""
    return deployments.plan(ctx, body.spec, principal=p)


@router.post("/deployments")
def apply(
    body: SpecText,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("deployment.apply", _ANY)),
) -> dict[str, Any]:
    """Apply a spec: idempotent (the same spec twice changes nothing)."""
    return deployments.apply(ctx, body.spec, p.actor, principal=p)


@router.get("/deployments")
def list_deployments(
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("deployment.read", _ANY)),
) -> list[dict]:
    """The deployments of the projects the caller holds a role on."""
    return deployment_views.list_deployments(ctx, authz.visible_projects(p, "deployment.read"))


@router.get("/deployments/{name}")
def show(
    name: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("deployment.read", _ANY)),
) -> dict[str, Any]:
    _on_deployment(ctx, p, "deployment.read", name)
    return deployment_views.show(ctx, name)


@router.delete("/deployments/{name}", status_code=204)
def delete(
    name: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("deployment.delete", _ANY)),
) -> None:
    _on_deployment(ctx, p, "deployment.delete", name)
    deployments.delete(ctx, name, p.actor)


@router.get("/deployments/{name}/rollout")
def rollout_status(
    name: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("deployment.read", _ANY)),
) -> dict[str, Any]:
    """Revisions, the latest rollout (waves, state, reason) and every replica's state."""
    _on_deployment(ctx, p, "deployment.read", name)
    return rollouts.status(ctx, name)


ROLLOUT_ACTIONS = {"pause": rollouts.pause, "resume": rollouts.resume, "undo": deployments.undo}


@router.post("/deployments/{name}/rollout/{action}")
def rollout_action(
    name: str,
    action: Literal["pause", "resume", "undo"],
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("rollout.act", _ANY)),
) -> dict[str, Any]:
    """`pause` after the current wave, `resume`, or `undo`: back to the previous revision (at
    once while a rollout is under way or after it failed, else wave by wave)."""
    _on_deployment(ctx, p, "rollout.act", name)
    return ROLLOUT_ACTIONS[action](ctx, name, p.actor)


@router.get("/images")
def list_images(
    ctx: HubContext = Depends(context), p: Principal = Depends(allow("image.read", _ANY))
) -> list[dict]:
    """The images of the projects the caller holds a role on."""
    return images.list_images(ctx, authz.visible_projects(p, "image.read"))


@router.post(
    "/images",
    status_code=201,
    openapi_extra=OCTET_STREAM_BODY,
)
async def push_image(
    request: Request,
    ref: str = Query(..., description="name[:tag] the archive is known by"),
    project: DnsLabel = Query("default", description="The project that owns the image."),
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("image.push", _ANY)),
) -> dict[str, Any]:
    """Upload an image archive (`podman save`), body as application/octet-stream."""
    authz.authorize(p, "image.push", authz.in_project(project, "image"))
    limit = ctx.settings.max_image_bytes
    return await images.store(ctx, ref, request.stream(), p.actor, limit, project=project)


@router.put("/quotas/{project}")
def set_quota(
    project: str,
    body: QuotaUpdate,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("quota.set")),
) -> dict[str, Any]:
    """Replace the project's GPU and replica quota and its GPU-hour budget."""
    return budgets.set_quota(ctx, project, p.actor, **body.model_dump())
