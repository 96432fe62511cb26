"""Playbook runs: start one, list them, read one and its events, cancel one."""

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.schemas import MAX_SQL_INT, JsonObject, Strict
from aiorch.hub.services import run_history, runs
from aiorch.hub.services.auth import Principal

router = APIRouter(prefix="/runs", tags=["runs"])

RunStatus = Literal["queued", "running", "successful", "failed", "interrupted", "canceled"]


class RunCreate(Strict):
    playbook: str = Field(
        min_length=1, max_length=255, description="Relative to the playbook set's folder."
    )
    playbook_set: str | None = Field(
        None, min_length=1, max_length=64, description='The set to run from (default "aiorch").'
    )
    limit: str | None = Field(None, max_length=10_000, description="Hosts, groups, KEY=VALUE.")
    check: bool = False
    diff: bool = False
    serial: int | None = Field(None, ge=1, le=100_000, description="Hosts per wave.")
    max_fail_ratio: float = Field(0.0, ge=0, le=1, description="Failed share that stops waves.")
    extravars: JsonObject = Field(default_factory=dict)


@router.post("", status_code=201)
def start_run(
    body: RunCreate, ctx: HubContext = Depends(context), p: Principal = Depends(allow("run.start"))
) -> dict[str, Any]:
    """Start a run; 409 names the host and the run holding it when a host is busy."""
    return runs.start_run(ctx, runs.RunRequest(**body.model_dump()), p.actor)


@router.get("")
def list_runs(
    limit: int = Query(50, ge=1, le=1000),
    status: RunStatus | None = None,
    ctx: HubContext = Depends(context),
    _: Principal = Depends(allow("run.read")),
) -> list[dict[str, Any]]:
    return run_history.list_runs(ctx, limit=limit, status=status)


@router.get("/{run_id}")
def show_run(
    run_id: str, ctx: HubContext = Depends(context), _: Principal = Depends(allow("run.read"))
) -> dict[str, Any]:
    return runs.get_run(ctx, run_id)


@router.get("/{run_id}/events")
def run_events(
    run_id: str,
    after: int = Query(0, ge=0, le=MAX_SQL_INT, description="Only events with a larger seq."),
    limit: int = Query(1000, ge=1, le=10_000),
    ctx: HubContext = Depends(context),
    _: Principal = Depends(allow("run.read")),
) -> list[dict[str, Any]]:
    return run_history.run_events(ctx, run_id, after, limit)


@router.post("/{run_id}/cancel")
def cancel_run(
    run_id: str, ctx: HubContext = Depends(context), p: Principal = Depends(allow("run.cancel"))
) -> dict[str, Any]:
    return runs.cancel_run(ctx, run_id, p.actor)
