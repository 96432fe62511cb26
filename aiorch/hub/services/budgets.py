"""GPU-hour budgets and GPU quotas as the job queue sees them.

A project's budget is `quotas.gpu_hours` per `quotas.budget_period` (calendar day, ISO week
or month, in UTC). What counts against it now: the GPU time used by the project's jobs whose
latest attempt started in the current period, plus every reservation held now (admission
reserves `gpus * maxDuration`; the end of an attempt settles it into the real use).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils
from prometheus_client.core import GaugeMetricFamily, Metric

from aiorch.errors import InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit
from aiorch.jobs import states
from aiorch.jobs.queue import Allowance

PERIODS = ("day", "week", "month")
_HOLDING = tuple(sorted(states.HOLDING))


def period_start(now: float, period: str) -> float:
    """When the budget period holding `now` began (UTC)."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        day -= timedelta(days=day.weekday())
    elif period == "month":
        day = day.replace(day=1)
    return day.timestamp()


def _used_and_reserved(db: sqlite_utils.Database, project: str, since: float) -> float:
    row = db.execute(
        "SELECT COALESCE(SUM(CASE WHEN (SELECT MAX(a.started_at) FROM job_attempts a "
        "WHERE a.job_id = j.id) >= ? THEN j.used_gpu_s ELSE 0 END), 0) "
        "+ COALESCE(SUM(j.reserved_gpu_s), 0) FROM jobs j WHERE j.project = ?",
        [since, project],
    ).fetchone()
    return float(row[0])


def job_gpus_held(db: sqlite_utils.Database, project: str) -> int:
    """GPUs the project's job attempts hold now (its replicas' count beside them: one quota)."""
    marks = ",".join("?" * len(_HOLDING))
    row = db.execute(
        "SELECT COALESCE(SUM(json_array_length(a.gpus)), 0) FROM job_attempts a "
        f"JOIN jobs j ON j.id = a.job_id WHERE j.project = ? AND a.state IN ({marks})",
        [project, *_HOLDING],
    ).fetchone()
    return int(row[0])


def _gpus_held(db: sqlite_utils.Database, project: str) -> int:
    row = db.execute(
        "SELECT COALESCE(SUM(json_array_length(r.gpus)), 0) FROM deployment_replicas r "
        "JOIN deployments d ON d.name = r.deployment WHERE d.project = ?",
        [project],
    ).fetchone()
    return int(row[0]) + job_gpus_held(db, project)


def budget(db: sqlite_utils.Database, project: str, now: float) -> dict[str, Any]:
    """The project's GPU quota and budget and what is left of each (None: no limit)."""
    row = db.execute(
        "SELECT max_gpus, gpu_hours, budget_period FROM quotas WHERE project = ?", [project]
    ).fetchone()
    max_gpus, gpu_hours, period = row if row else (None, None, None)
    period = period or "month"
    used_s = _used_and_reserved(db, project, period_start(now, period))
    return {
        "project": project,
        "max_gpus": max_gpus,
        "gpus_left": None if max_gpus is None else max_gpus - _gpus_held(db, project),
        "gpu_hours": gpu_hours,
        "budget_period": period,
        "gpu_hours_counted": used_s / 3600,
        "gpu_hours_left": None if gpu_hours is None else gpu_hours - used_s / 3600,
    }


def allowances(db: sqlite_utils.Database, projects: set[str], now: float) -> dict[str, Allowance]:
    """What each project may still take, for `queue.schedule`."""
    out = {}
    for project in sorted(projects):
        left = budget(db, project, now)
        hours = left["gpu_hours_left"]
        out[project] = Allowance(left["gpus_left"], None if hours is None else hours * 3600)
    return out


def metric_families(
    db: sqlite_utils.Database, now: float, projects: frozenset[str] | None
) -> Iterator[Metric]:
    """/metrics: jobs by project and state, GPU-hours used, budgets and what is left."""
    shown = (lambda p: True) if projects is None else (lambda p: p in projects)
    jobs = GaugeMetricFamily(
        "aiorch_jobs", "Jobs by project and state.", labels=["project", "state"]
    )
    counts: dict[str, dict[str, int]] = {}
    for project, state, count in db.execute(
        "SELECT project, state, COUNT(*) FROM jobs GROUP BY project, state"
    ):
        counts.setdefault(project, {})[state] = count
    used = GaugeMetricFamily(
        "aiorch_job_gpu_hours_used",
        "GPU-hours the project's jobs used (settled attempts), all time.",
        labels=["project"],
    )
    for project, seconds in db.execute(
        "SELECT project, SUM(used_gpu_s) FROM jobs GROUP BY project"
    ):
        if shown(project):
            used.add_metric([project], seconds / 3600)
    for project in sorted(counts):
        if shown(project):
            for state in states.STATES:
                jobs.add_metric([project, state], counts[project].get(state, 0))
    total = GaugeMetricFamily(
        "aiorch_project_gpu_hours_budget",
        "The project's GPU-hour budget per period.",
        labels=["project", "period"],
    )
    remaining = GaugeMetricFamily(
        "aiorch_project_gpu_hours_remaining",
        "GPU-hours left in the current period (used plus reserved counted).",
        labels=["project", "period"],
    )
    for (project,) in db.execute(
        "SELECT project FROM quotas WHERE gpu_hours IS NOT NULL ORDER BY project"
    ):
        if shown(project):
            left = budget(db, project, now)
            total.add_metric([project, left["budget_period"]], left["gpu_hours"])
            remaining.add_metric([project, left["budget_period"]], left["gpu_hours_left"])
    yield from (jobs, used, total, remaining)


def set_quota(
    ctx: HubContext,
    project: str,
    actor: str,
    max_gpus: int | None = None,
    max_replicas: int | None = None,
    gpu_hours: float | None = None,
    budget_period: str | None = None,
) -> dict[str, Any]:
    """Replace the project's quota and GPU-hour budget (a budget's period defaults to a
    month); a period without a budget is refused, being a limit of nothing."""
    if budget_period is not None and gpu_hours is None:
        raise InvalidInput("budget_period: give gpu_hours with it")
    if budget_period is not None and budget_period not in PERIODS:
        raise InvalidInput(f"budget_period: must be one of {', '.join(PERIODS)}")
    row = {
        "project": project,
        "max_gpus": max_gpus,
        "max_replicas": max_replicas,
        "gpu_hours": gpu_hours,
        "budget_period": None if gpu_hours is None else budget_period or "month",
    }

    def op(db: sqlite_utils.Database) -> None:
        db.table("quotas").upsert(row, pk="project")
        audit.record(db, actor, "quota.set", f"project:{project}", row, ts=ctx.clock())

    ctx.store.write(op)
    return row
