"""Runs: the list, and one run with its per-host recap and its log, live while it runs.

The live log is server-sent events: the page renders what is stored, then the stream sends
each batch of events stored after it (already redacted when written, services/run_events.py)
and a last `end` event once the run has ended and every event has been sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import context
from aiorch.hub.schemas import MAX_SQL_INT
from aiorch.hub.services import authz, run_history
from aiorch.hub.ui.deps import UiUser, signed_in
from aiorch.hub.ui.paging import PageNumber, pager, window
from aiorch.hub.ui.render import page, templates

router = APIRouter()

LOG_LIMIT = 10_000  # events a page shows at once; the API pages through the rest
POLL_S = 0.5  # how often a live log looks for new events (the batcher writes every 0.2 s)


@router.get("/runs", response_class=HTMLResponse)
def run_list(
    request: Request,
    page_number: int = PageNumber,
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    authz.authorize(user.principal, "run.read", authz.FLEET)
    limit, offset = window(page_number)
    rows = run_history.list_runs(ctx, limit=limit, offset=offset)
    return page(request, "runs.html", user, pager=pager(page_number, rows))


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    run_id: str,
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> HTMLResponse:
    authz.authorize(user.principal, "run.read", authz.FLEET)
    run = run_history.get_run(ctx, run_id)
    events = run_history.run_events(ctx, run_id, 0, LOG_LIMIT)
    live = run["status"] in run_history.ACTIVE_STATUSES
    last = events[-1]["seq"] if events else 0
    return page(
        request,
        "run.html",
        user,
        run=run,
        events=events,
        live=live,
        last_seq=last,
        truncated=not live and len(events) == LOG_LIMIT,
    )


def _rows(events: list[dict[str, Any]]) -> str:
    return templates.get_template("run_log_rows.html").render(events=events)


async def log_stream(ctx: HubContext, run_id: str, after: int) -> AsyncIterator[dict[str, str]]:
    """Batches of rendered log rows after seq `after`, then `end` with the run's status.
    The status is read before the events: a run seen ended has committed all of them."""
    seq = after
    while True:
        run = await run_in_threadpool(run_history.get_run, ctx, run_id)
        events = await run_in_threadpool(run_history.run_events, ctx, run_id, seq, LOG_LIMIT)
        if events:
            seq = events[-1]["seq"]
            yield {"event": "log", "data": _rows(events)}
        if run["status"] not in run_history.ACTIVE_STATUSES and len(events) < LOG_LIMIT:
            yield {"event": "end", "data": run["status"]}
            return
        if not events:
            await asyncio.sleep(POLL_S)


@router.get("/runs/{run_id}/log")
def run_log(
    run_id: str,
    after: int = Query(0, ge=0, le=MAX_SQL_INT, description="Only events with a larger seq."),
    user: UiUser = Depends(signed_in),
    ctx: HubContext = Depends(context),
) -> EventSourceResponse:
    authz.authorize(user.principal, "run.read", authz.FLEET)
    run_history.get_run(ctx, run_id)  # 404 before the stream starts
    return EventSourceResponse(log_stream(ctx, run_id, after))
