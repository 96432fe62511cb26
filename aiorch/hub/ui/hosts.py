"""The host list (a page at a time, by site) and the host page: facts, GPUs, and charts whose
points come from the series route here, as uPlot's tables with the gaps left as breaks."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import context
from aiorch.hub.routers.telemetry import MAX_DURATION_S
from aiorch.hub.services import authz, chart_columns, fleet_page, inventory, telemetry_query
from aiorch.hub.ui.deps import UiUser, signed_in
from aiorch.hub.ui.render import page

router = APIRouter()

# (title, metric as the agent sends it (edge_agent/collectors), unit, drawn as a rate)
CHARTS = (
    ("GPU utilization", "gpu_utilization_percent", "%", False),
    ("GPU memory used", "gpu_memory_used_bytes", "bytes", False),
    ("GPU temperature", "gpu_temperature_celsius", "°C", False),
    ("GPU power", "gpu_power_watts", "W", False),
    ("GPU XID errors", "gpu_xid_errors_total", "errors (running count)", False),
    ("GPU ECC errors", "gpu_ecc_errors_total", "errors (running count)", False),
    ("Host CPU", "host_cpu_utilization_percent", "%", False),
    ("Host memory used", "host_memory_used_bytes", "bytes", False),
    ("Network received", "net_receive_bytes_total", "bytes/s", True),
    ("Network sent", "net_transmit_bytes_total", "bytes/s", True),
)
RATES = frozenset(metric for _, metric, _, rate in CHARTS if rate)
RANGES = (("15 min", 900), ("1 hour", 3600), ("6 hours", 21600), ("24 hours", 86400))


def _since(default: float = 3600) -> Any:
    return Query(default, gt=0, le=MAX_DURATION_S, allow_inf_nan=False)


@router.get("/hosts", response_class=HTMLResponse)
def hosts(
    request: Request,
    site: str = "",
    page_number: int = Query(1, alias="page", ge=1),
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    authz.authorize(user.principal, "host.read", authz.FLEET)
    listed = fleet_page.host_list(ctx, site or None, page_number)
    return page(
        request,
        "hosts.html",
        user,
        listed=listed,
        site=site,
        sites=inventory.list_sites(ctx),
        now=ctx.clock(),
        link=lambda n: "/ui/hosts?" + urlencode({**({"site": site} if site else {}), "page": n}),
    )


@router.get("/hosts/{name}", response_class=HTMLResponse)
def host(
    request: Request,
    name: str,
    since: float = _since(),
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    authz.authorize(user.principal, "host.read", authz.FLEET)
    detail = fleet_page.host_detail(ctx, name)
    charts = [
        {
            "title": title,
            "unit": unit,
            "url": f"/ui/hosts/{quote(name)}/series?"
            + urlencode({"metric": metric, "since": since}),
        }
        for title, metric, unit, _ in CHARTS
    ]
    return page(
        request,
        "host.html",
        user,
        host=detail,
        charts=charts,
        since=since,
        ranges=RANGES,
        now=ctx.clock(),
    )


@router.get("/hosts/{name}/series")
def series(
    name: str,
    metric: str,
    since: float = _since(),
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> dict[str, Any]:
    """METRIC on host NAME over the last SINCE seconds as uPlot tables, a null in each gap."""
    authz.authorize(user.principal, "telemetry.read", authz.FLEET)
    answer = telemetry_query.query(ctx, name, metric, since)
    return chart_columns.columns(answer, rate=metric in RATES)
