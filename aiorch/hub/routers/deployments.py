"""Deployments (plan, apply, list, show, delete), images and project quotas."""

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import admin, context, operator, viewer
from aiorch.hub.schemas import QuotaUpdate, SpecText
from aiorch.hub.services import deployments, images, rollouts
from aiorch.hub.services.auth import Principal

router = APIRouter(tags=["deployments"])


@router.post("/deployments/plan")
def plan(
    body: SpecText, ctx: HubContext = Depends(context), _: Principal = Depends(operator)
) -> dict[str, Any]:
    """What apply would change, and the policy decisions; changes nothing."""
    return deployments.plan(ctx, body.spec)


@router.post("/deployments")
def apply(
    body: SpecText, ctx: HubContext = Depends(context), p: Principal = Depends(operator)
) -> dict[str, Any]:
    """Apply a spec: idempotent (the same spec twice changes nothing)."""
    return deployments.apply(ctx, body.spec, p.actor)


@router.get("/deployments")
def list_deployments(
    ctx: HubContext = Depends(context), _: Principal = Depends(viewer)
) -> list[dict]:
    return deployments.list_deployments(ctx)


@router.get("/deployments/{name}")
def show(
    name: str, ctx: HubContext = Depends(context), _: Principal = Depends(viewer)
) -> dict[str, Any]:
    return deployments.show(ctx, name)


@router.delete("/deployments/{name}", status_code=204)
def delete(name: str, ctx: HubContext = Depends(context), p: Principal = Depends(operator)) -> None:
    deployments.delete(ctx, name, p.actor)


@router.get("/deployments/{name}/rollout")
def rollout_status(
    name: str, ctx: HubContext = Depends(context), _: Principal = Depends(viewer)
) -> dict[str, Any]:
    """Revisions, the latest rollout (waves, state, reason) and every replica's state."""
    return rollouts.status(ctx, name)


ROLLOUT_ACTIONS = {"pause": rollouts.pause, "resume": rollouts.resume, "undo": deployments.undo}


@router.post("/deployments/{name}/rollout/{action}")
def rollout_action(
    name: str,
    action: Literal["pause", "resume", "undo"],
    ctx: HubContext = Depends(context),
    p: Principal = Depends(operator),
) -> dict[str, Any]:
    """`pause` after the current wave, `resume`, or `undo`: back to the previous revision (at
    once while a rollout is under way or after it failed, else wave by wave)."""
    return ROLLOUT_ACTIONS[action](ctx, name, p.actor)


@router.get("/images")
def list_images(ctx: HubContext = Depends(context), _: Principal = Depends(viewer)) -> list[dict]:
    return images.list_images(ctx)


@router.post(
    "/images",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def push_image(
    request: Request,
    ref: str = Query(..., description="name[:tag] the archive is known by"),
    ctx: HubContext = Depends(context),
    p: Principal = Depends(operator),
) -> dict[str, Any]:
    """Upload an image archive (`podman save`), body as application/octet-stream."""
    return await images.store(ctx, ref, request.stream(), p.actor, ctx.settings.max_image_bytes)


@router.put("/quotas/{project}")
def set_quota(
    project: str,
    body: QuotaUpdate,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(admin),
) -> dict[str, Any]:
    return deployments.set_quota(ctx, project, body.max_gpus, body.max_replicas, p.actor)
