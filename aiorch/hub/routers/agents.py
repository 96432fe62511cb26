"""Agents as people see them: list, show, desired state."""

from typing import Any

from fastapi import APIRouter, Depends

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import context, operator, viewer
from aiorch.hub.schemas import DesiredStateUpdate
from aiorch.hub.services import agents
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/agents", tags=["agents"])


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
    agent_id: str, ctx: HubContext = Depends(context), p: Principal = Depends(viewer)
) -> dict[str, Any]:
    return agents.get_desired(ctx, agent_id, p)


@router.put("/{agent_id}/desired")
def set_desired(
    agent_id: str,
    body: DesiredStateUpdate,
    ctx: HubContext = Depends(context),
    p: Principal = Depends(operator),
) -> dict[str, Any]:
    return agents.set_desired(ctx, agent_id, body.document, p.actor)
