"""The agents' own endpoints: check-in, telemetry, images, model files, job artifacts and
renewal, over mTLS.

These routes take no FastAPI dependencies at all: they authenticate (the client certificate,
services/agent_identity.py) and parse the body themselves, because per-request dependency
resolution was most of the cost of a check-in. The OpenAPI schema still documents their bodies.
Every answer carries the hub's clock, so agents can tell when theirs is off.
"""

import json
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import OCTET_STREAM_BODY, json_body
from aiorch.hub.schemas import CheckinRequest, RenewRequest, TelemetryBatch
from aiorch.hub.services import (
    agent_identity,
    agents,
    audit_checkpoints,
    images,
    job_artifacts,
    metrics,
    models,
    telemetry,
)
from aiorch.hub.services.agent_identity import AgentIdentity
from edge_agent.contract.identity import (
    BUNDLE_HEADER,
    CHECKPOINT_HEADER,
    RENEW_HEADER,
    TIME_HEADER,
)

M = TypeVar("M", bound=BaseModel)

router = APIRouter(prefix="/agents", tags=["agent protocol"])
POLL_HEADER = "X-Aiorch-Poll-Interval"


def _agent_ctx(request: Request, agent_id: str) -> tuple[HubContext, AgentIdentity]:
    """The hub context, once the caller is proven to be agent `agent_id` (401/403 first)."""
    ctx: HubContext = request.app.state.ctx
    return ctx, agent_identity.authenticate(ctx, request.scope, agent_id)


async def _authorised_body(
    request: Request, agent_id: str, model: type[M]
) -> tuple[HubContext, AgentIdentity, M]:
    """Authenticate first, then parse the body (422)."""
    ctx, identity = _agent_ctx(request, agent_id)
    return ctx, identity, model.model_validate_json(await request.body())


def trust_headers(ctx: HubContext, identity: AgentIdentity | None = None) -> dict[str, str]:
    """The hub's time, the digest of the CAs it trusts, the newest signed audit checkpoint
    (every agent keeps one: a rolled-back hub database shows), and whether to renew now: when
    asked to rekey, or when another CA than the certificate's signs now (a rotation)."""
    authority = ctx.authority
    headers = {TIME_HEADER: f"{ctx.clock():.3f}", BUNDLE_HEADER: authority.bundle_digest}
    checkpoint = audit_checkpoints.latest_checkpoint(ctx)
    if checkpoint is not None:
        headers[CHECKPOINT_HEADER] = json.dumps(checkpoint, separators=(",", ":"))
    if identity is not None and (identity.rekey or identity.ca_id != authority.signing.id):
        headers[RENEW_HEADER] = "1"
    return headers


@router.post(
    "/{agent_id}/checkin",
    responses={304: {"description": "Desired state unchanged"}},
    openapi_extra=json_body(CheckinRequest),
)
async def checkin(agent_id: str, request: Request) -> Response:
    """Heartbeat and desired-state poll in one: 304 while the agent's revision is current."""
    ctx, identity, body = await _authorised_body(request, agent_id, CheckinRequest)
    answer = await agents.checkin(ctx, agent_id, body, request.headers.get("if-none-match"))
    metrics.CHECKINS.inc()
    headers = {
        "ETag": agents.etag(answer.revision),
        POLL_HEADER: str(ctx.settings.poll_interval_s),
        **trust_headers(ctx, identity),
    }
    if answer.document is None:
        return Response(status_code=304, headers=headers)
    content = {
        "revision": answer.revision,
        "desired": answer.document,
        "poll_interval_s": ctx.settings.poll_interval_s,
    }
    return JSONResponse(content, headers=headers)


@router.post("/{agent_id}/telemetry", openapi_extra=json_body(TelemetryBatch))
async def upload_telemetry(agent_id: str, request: Request) -> dict[str, Any]:
    """Store a telemetry batch once; a batch sent again is acknowledged again."""
    ctx, _, body = await _authorised_body(request, agent_id, TelemetryBatch)
    return await telemetry.ingest(ctx, agent_id, body)


@router.get("/{agent_id}/images/{digest}", response_class=FileResponse)
async def download_image(agent_id: str, digest: str, request: Request) -> FileResponse:
    """An image archive the agent's desired state names; it checks the sha256 itself."""
    ctx, _ = _agent_ctx(request, agent_id)
    path = images.agent_blob(ctx, agent_id, digest)
    return FileResponse(path, media_type="application/octet-stream")


@router.get("/{agent_id}/models/{digest}/files/{path:path}", response_class=FileResponse)
async def download_model_file(
    agent_id: str, digest: str, path: str, request: Request
) -> FileResponse:
    """A file of a model the agent's desired state names; Range requests resume a download
    cut short (FileResponse answers them with 206), and the agent checks the sha256."""
    ctx, _ = _agent_ctx(request, agent_id)
    blob = models.agent_file(ctx, agent_id, digest, path)
    return FileResponse(blob, media_type="application/octet-stream")


# BodyGuard lets octet-stream bodies up to max_artifact_bytes through on these paths.
ARTIFACT_UPLOAD = r"/agents/[^/]+/jobs/[^/]+/artifacts/[^/]+"


@router.put(
    "/{agent_id}/jobs/{attempt}/artifacts/{sha256}",
    status_code=201,
    openapi_extra=OCTET_STREAM_BODY,
)
async def upload_artifact(
    agent_id: str, attempt: str, sha256: str, request: Request
) -> dict[str, Any]:
    """A finished job's artifact, raw bytes; kept once its sha256 matches (a retried upload
    stores the same file again). The attempt must be this agent's."""
    ctx, _ = _agent_ctx(request, agent_id)
    return await job_artifacts.store_upload(ctx, agent_id, attempt, sha256, request.stream())


@router.post("/{agent_id}/renew", openapi_extra=json_body(RenewRequest))
async def renew(agent_id: str, request: Request) -> JSONResponse:
    """A new certificate for a fresh key (the agent renews at 2/3 of its certificate's life)."""
    ctx, identity, body = await _authorised_body(request, agent_id, RenewRequest)
    answer = await run_in_threadpool(agent_identity.renew, ctx, identity, body.csr)
    return JSONResponse(answer, headers=trust_headers(ctx))


@router.get("/{agent_id}/ca-bundle")
async def ca_bundle(agent_id: str, request: Request) -> Response:
    """The CAs that verify the hub now (PEM): agents fetch it when the digest header changes."""
    ctx, _ = _agent_ctx(request, agent_id)
    bundle = ctx.authority.bundle_pem()
    return Response(bundle, media_type="application/x-pem-file", headers=trust_headers(ctx))
