"""Agents as people see them: list, show, desired state."""

from typing import Any

from fastapi import APIRouter, Depends

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.schemas import DesiredStateUpdate
from aiorch.hub.services import agent_identity, agents
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/agents", tags=["agents"])


@router.get("")
def list_agents(
    ctx: HubContext = Depends(context), _: Principal = Depends(allow("agent.read"))
) -> list[dict]:
    return agents.list_agents(ctx)


@router.get("/{agent_id}")
def show_agent(
    agent_id: str, ctx: HubContext = Depends(context), _: Principal = Depends(allow("agent.read"))
) -> dict[str, Any]:
    return agents.get_agent(ctx, agent_id)


@router.get("/{agent_id}/desired")
def get_desired(
    agent_id: str,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("agent.desired.read")),
) -> dict[str, Any]:
    """The agent's whole desired state: every project's workloads there (global admin)."""
    return agents.get_desired(ctx, agent_id, p)


@router.put("/{agent_id}/desired")
def set_desired(
    agent_id: str,
    body: DesiredStateUpdate,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("agent.desired.write")),
) -> dict[str, Any]:
    return agents.set_desired(ctx, agent_id, body.document, p.actor)


@router.post("/{agent_id}/revoke")
def revoke_agent(
    agent_id: str, ctx: HubContext = Depends(context), p: Principal = Depends(allow("agent.revoke"))
) -> dict[str, Any]:
    """Revoke the agent and its certificates: refused from its very next request."""
    return agent_identity.revoke(ctx, agent_id, p.actor)


@router.post("/{agent_id}/rekey")
def rekey_agent(
    agent_id: str, ctx: HubContext = Depends(context), p: Principal = Depends(allow("agent.rekey"))
) -> dict[str, Any]:
    """Have the agent renew with a fresh key at its next check-in."""
    return agent_identity.request_rekey(ctx, agent_id, p.actor)
