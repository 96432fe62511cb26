"""GPU-hours: how much GPU time the fleet used, by site, project or deployment.

Computed from the one-minute rollups of GPU utilization (named in `edge_agent.contract`):
every minute a GPU reported counts as 1/60 of a GPU-hour available and `mean utilization / 100`
of it used.
Project and deployment come from the labels the agent puts on a GPU's samples while a
workload holds it; GPUs without them are reported as `unassigned`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from aiorch.errors import InvalidInput
from aiorch.hub.context import HubContext
from edge_agent.contract.telemetry import GPU_UTILIZATION, SIMULATED_LABEL

GROUPINGS = ("site", "project", "deployment", "host")
_PER_PROJECT = ("project", "deployment")  # groupings whose rows belong to one project


def gpu_hours(
    ctx: HubContext, by: str, since_s: float, projects: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    """By project or deployment, only GPUs of `projects` (None: every project) and unassigned
    ones are counted; by site or host, the fleet's whole use."""
    if by not in GROUPINGS:
        raise InvalidInput(f"group by one of {', '.join(GROUPINGS)}, not {by!r}")
    first_minute = int((ctx.clock() - since_s) // 60)
    rows = (
        ctx.store.read()
        .execute(
            "SELECT a.site, a.host_name, s.labels, r.count, r.sum FROM rollups_1m r "
            "JOIN series s ON s.id = r.series_id JOIN agents a ON a.id = s.agent_id "
            "WHERE s.metric = ? AND r.minute >= ?",
            [GPU_UTILIZATION, first_minute],
        )
        .fetchall()
    )
    totals: dict[tuple[str, bool], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for site, host, labels_json, count, total in rows:
        labels = json.loads(labels_json)
        owner = labels.get("project")
        if by in _PER_PROJECT and projects is not None and owner and owner not in projects:
            continue
        key = {"site": site, "host": host}.get(by) or labels.get(by) or "unassigned"
        simulated = labels.get(SIMULATED_LABEL) == "true"
        acc = totals[(key, simulated)]
        acc[0] += 1 / 60  # one GPU for one minute
        acc[1] += (total / count) / 100 / 60
    return [
        {
            by: key,
            "simulated": simulated,
            "gpu_hours_available": round(avail, 4),
            "gpu_hours_used": round(used, 4),
        }
        for (key, simulated), (avail, used) in sorted(totals.items())
    ]
