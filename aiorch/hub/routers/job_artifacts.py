"""Job artifacts as people get them: one file of a job's outputs, checked into the hub's
store by sha256 (the agents upload them through the agent protocol)."""

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.services import authz, job_artifacts
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{name}/artifacts/{sha256}", response_class=FileResponse)
def download_artifact(
    name: str,
    sha256: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("job.read", authz.ANY_PROJECT)),
) -> FileResponse:
    """An artifact one of the job's attempts lists, as application/octet-stream."""
    path = job_artifacts.artifact_file(ctx, p, name, sha256)
    return FileResponse(path, media_type="application/octet-stream", filename=sha256)
