"""The model store as people use it: upload file blobs, register a model, list models."""

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from aiorch.deploy.spec import DnsLabel
from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import OCTET_STREAM_BODY, allow, context
from aiorch.hub.services import authz, models
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/models", tags=["models"])
_ANY = authz.ANY_PROJECT
BLOBS = "/models/blobs"  # uploads: BodyGuard lets octet-stream bodies up to max_image_bytes


class ModelFileEntry(BaseModel):
    path: str
    sha256: str
    size: int


class ModelRegistration(BaseModel):
    name: str
    project: DnsLabel = "default"
    files: list[ModelFileEntry] = Field(min_length=1, max_length=4096)


@router.get("")
def list_models(
    ctx: HubContext = Depends(context), p: Principal = Depends(allow("model.read", _ANY))
) -> list[dict[str, Any]]:
    """The models of the projects the caller holds a role on."""
    return models.list_models(ctx, authz.visible_projects(p, "model.read"))


@router.post(
    "/blobs",
    status_code=201,
    openapi_extra=OCTET_STREAM_BODY,
)
async def upload_blob(
    request: Request,
    sha256: str = Query(..., description="The file's sha256; the upload must match it."),
    project: DnsLabel = Query("default", description="The project of the model it is for."),
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("model.push", _ANY)),
) -> dict[str, Any]:
    """Upload one model file, body as application/octet-stream (then register the model)."""
    authz.authorize(p, "model.push", authz.in_project(project, "model"))
    return await models.store_blob(ctx, sha256, request.stream(), ctx.settings.max_image_bytes)


@router.post("", status_code=201)
def register_model(
    body: ModelRegistration,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("model.push", _ANY)),
) -> dict[str, Any]:
    """Register a model from uploaded blobs; answers with its digest, which specs name."""
    authz.authorize(p, "model.push", authz.in_project(body.project, "model"))
    files = models.parse_files(entry.model_dump() for entry in body.files)
    return models.record(ctx, body.name, files, p.actor, body.project)
