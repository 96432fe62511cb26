"""The agents' own endpoints: check-in and telemetry upload, the hub's hot path.

These routes take no FastAPI dependencies at all: they authenticate and parse the body
themselves, because per-request dependency resolution was most of the cost of a check-in.
The OpenAPI schema still documents their bodies.
"""

from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel

from aiorch.hub.context import HubContext
from aiorch.hub.schemas import CheckinRequest, TelemetryBatch
from aiorch.hub.services import agents, auth, images, metrics, telemetry

M = TypeVar("M", bound=BaseModel)

router = APIRouter(prefix="/agents", tags=["agent protocol"])
POLL_HEADER = "X-Aiorch-Poll-Interval"


def _body_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = {"schema": model.model_json_schema()}
    return {"requestBody": {"required": True, "content": {"application/json": schema}}}


def _agent_ctx(request: Request, agent_id: str) -> HubContext:
    """The hub context, once the caller is proven to be agent `agent_id` (401/403 first)."""
    ctx: HubContext = request.app.state.ctx
    principal = auth.authenticate(ctx, request.headers.get("authorization"))
    auth.require_agent(principal, agent_id)
    return ctx


async def _authorised_body(request: Request, agent_id: str, model: type[M]) -> tuple[HubContext, M]:
    """Authenticate first, then parse the body (422)."""
    ctx = _agent_ctx(request, agent_id)
    return ctx, model.model_validate_json(await request.body())


@router.post(
    "/{agent_id}/checkin",
    responses={304: {"description": "Desired state unchanged"}},
    openapi_extra=_body_schema(CheckinRequest),
)
async def checkin(agent_id: str, request: Request) -> Response:
    """Heartbeat and desired-state poll in one: 304 while the agent's revision is current."""
    ctx, body = await _authorised_body(request, agent_id, CheckinRequest)
    answer = await agents.checkin(ctx, agent_id, body, request.headers.get("if-none-match"))
    metrics.CHECKINS.inc()
    headers = {"ETag": agents.etag(answer.revision), POLL_HEADER: str(ctx.settings.poll_interval_s)}
    if answer.document is None:
        return Response(status_code=304, headers=headers)
    content = {
        "revision": answer.revision,
        "desired": answer.document,
        "poll_interval_s": ctx.settings.poll_interval_s,
    }
    return JSONResponse(content, headers=headers)


@router.post("/{agent_id}/telemetry", openapi_extra=_body_schema(TelemetryBatch))
async def upload_telemetry(agent_id: str, request: Request) -> dict[str, Any]:
    """Store a telemetry batch once; a batch sent again is acknowledged again."""
    ctx, body = await _authorised_body(request, agent_id, TelemetryBatch)
    return await telemetry.ingest(ctx, agent_id, body)


@router.get("/{agent_id}/images/{digest}", response_class=FileResponse)
async def download_image(agent_id: str, digest: str, request: Request) -> FileResponse:
    """An image archive the agent's desired state names; it checks the sha256 itself."""
    path = images.agent_blob(_agent_ctx(request, agent_id), agent_id, digest)
    return FileResponse(path, media_type="application/octet-stream")
