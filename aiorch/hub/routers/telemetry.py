"""Telemetry as people read it: series over time, GPU-hours, and Prometheus `/metrics`."""

from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.services import accounting, authz, metrics, telemetry_query
from aiorch.hub.services.auth import Principal

router = APIRouter(tags=["telemetry"])
scrape = APIRouter(tags=["telemetry"])

# Every duration parameter is finite and at most this (longer than any retention), so the
# time arithmetic and SQLite's integers never overflow: `since_s=inf` is a 422, not a 500.
MAX_DURATION_S = 10 * 366 * 86400
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"


def _seconds(default: float, *, at_least_zero: bool = False) -> Any:
    """A duration query parameter in seconds: > 0 (or >= 0), finite, at most MAX_DURATION_S."""
    if at_least_zero:
        return Query(default, ge=0, le=MAX_DURATION_S, allow_inf_nan=False)
    return Query(default, gt=0, le=MAX_DURATION_S, allow_inf_nan=False)


@router.get("/telemetry/series")
def series(
    host: str,
    metric: str,
    since_s: float = _seconds(3600),
    until_s: float = _seconds(0, at_least_zero=True),
    resolution: str = "auto",
    ctx: HubContext = Depends(context),
    _: Principal = Depends(allow("telemetry.read")),
) -> dict[str, Any]:
    """Points of every series of METRIC on HOST; silences are listed as gaps, never filled."""
    return telemetry_query.query(ctx, host, metric, since_s, until_s, resolution)


@router.get("/accounting/gpu-hours")
def gpu_hours(
    by: str = "site",
    since_s: float = _seconds(86400),
    ctx: HubContext = Depends(context),
    p: Principal = Depends(allow("accounting.read", authz.ANY_PROJECT)),
) -> list[dict[str, Any]]:
    """By project or deployment, only the projects the caller holds a role on."""
    return accounting.gpu_hours(ctx, by, since_s, authz.visible_projects(p, "accounting.read"))


@scrape.get("/metrics", response_class=Response)
def prometheus_metrics(
    ctx: HubContext = Depends(context), p: Principal = Depends(allow("metrics.read"))
) -> Response:
    """Prometheus exposition; scrape with a viewer token (`authorization` in the scrape config):
    deployment series only of the projects it holds a role on."""
    text = metrics.render(ctx, authz.visible_projects(p, "deployment.read"))
    return Response(text, media_type=EXPOSITION)


@scrape.get("/metrics/dcgm", response_class=Response)
def dcgm_metrics(
    ctx: HubContext = Depends(context), _: Principal = Depends(allow("metrics.read"))
) -> Response:
    """The fleet's GPU series under the DCGM exporter's names, units and labels, for NVIDIA's
    DCGM dashboard; scrape it with `honor_labels: true` (its `instance` is the GPU's host)."""
    return Response(metrics.render_dcgm(ctx), media_type=EXPOSITION)
