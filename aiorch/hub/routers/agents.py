"""Agents as people see them (list, desired state) and as agents use them (check-in, telemetry)."""

from typing import Any

from fastapi import APIRouter, Depends, Header, Response

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import agent_self, context, operator, viewer
from aiorch.hub.schemas import CheckinRequest, DesiredStateUpdate, TelemetryBatch
from aiorch.hub.services import agents, telemetry
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/agents", tags=["agents"])
POLL_HEADER = "X-Aiorch-Poll-Interval"


@router.get("")
def list_agents(ctx: HubContext = Depends(context), _: Principal = Depends(viewer)) -> list[dict]:
    return agents.list_agents(ctx)


@router.get("/{agent_id}")
def show_agent(
    agent_id: str, ctx: HubContext = Depends(context), _: Principal = Depends(viewer)
) -> dict[str, Any]:
    return agents.get_agent(ctx, agent_id)


@router.get("/{agent_id}/desired")
def get_desired(
    agent_id: str, ctx: HubContext = Depends(context), _: Principal = Depends(viewer)
) -> dict[str, Any]:
    return agents.get_desired(ctx, agent_id)


@router.put("/{agent_id}/desired")
def set_desired(
    agent_id: str,
    body: DesiredStateUpdate,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(operator),
) -> dict[str, Any]:
    return agents.set_desired(ctx, agent_id, body.document, p.actor)


@router.post("/{agent_id}/checkin", responses={304: {"description": "Desired state unchanged"}})
def checkin(
    agent_id: str,
    body: CheckinRequest,
    response: Response,
    if_none_match: str | None = Header(None),
    ctx: HubContext = Depends(context),
    _: Principal = Depends(agent_self),
) -> Any:
    """Heartbeat and desired-state poll in one: 304 while the agent's revision is current."""
    answer = agents.checkin(ctx, agent_id, body, if_none_match)
    headers = {"ETag": agents.etag(answer.revision), POLL_HEADER: str(ctx.settings.poll_interval_s)}
    if answer.document is None:
        return Response(status_code=304, headers=headers)
    response.headers.update(headers)
    return {
        "revision": answer.revision,
        "desired": answer.document,
        "poll_interval_s": ctx.settings.poll_interval_s,
    }


@router.post("/{agent_id}/telemetry")
def upload_telemetry(
    agent_id: str,
    body: TelemetryBatch,
    ctx: HubContext = Depends(context),
    _: Principal = Depends(agent_self),
) -> dict[str, Any]:
    return telemetry.ingest(ctx, agent_id, body)
