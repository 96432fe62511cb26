"""The `jobs-clusters` pass: submit the attempts the scheduling pass handed to a Slurm
cluster, and follow them there (state, log, cancel) until they end.

All the talking happens outside the writer; what Slurm says is then stored the way an
agent's report is (`job_reports.apply_report`), so a cluster job's life reads, retries and
settles like any other. An attempt's `external_id` is `<cluster>/<slurm job id>`, the id
empty until the submission is known: the submission is named after the attempt, so after a
crash the pass finds it by name before it would submit again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlite_utils

from aiorch.hub.context import HubContext
from aiorch.hub.services import clusters, job_records, job_reports
from aiorch.jobs import states
from aiorch.jobs.slurm import ClusterApi, ClusterError, ClusterJob, reading
from edge_agent.contract.job import JobReport

log = logging.getLogger("aiorch.hub.jobs")
LOG_REFRESH_S = 10.0  # how often a running job's log is read again (an SFTP read each time)
Backend = Callable[[clusters.Cluster], Any]  # a ClusterBackend for the cluster


def follow_pass(ctx: HubContext, backend_for: Backend) -> str | None:
    """Every AIORCH_JOB_SCHEDULE_INTERVAL_S; one session per cluster with work."""
    db = ctx.store.read()
    active = _active(db)
    if not active:
        return None
    known = clusters.known(db)
    by_cluster: dict[str, list[dict[str, Any]]] = {}
    for attempt in active:
        by_cluster.setdefault(attempt["external_id"].split("/", 1)[0], []).append(attempt)
    moved = 0
    for name, attempts in sorted(by_cluster.items()):
        cluster = known.get(name)
        if cluster is None:
            log.warning("Slurm cluster %s has left the inventory; %d job(s) not followed",
                        name, len(attempts))  # fmt: skip
            continue
        try:
            with backend_for(cluster).session() as api:
                moved += sum(_follow(ctx, api, name, attempt) for attempt in attempts)
        except ClusterError as exc:
            log.warning("Slurm cluster %s: %s", name, exc)
    return f"{moved} cluster job(s) moved" if moved else None


def _active(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    marks = ",".join("?" * len(states.HOLDING))
    return [
        dict(r)
        for r in db.query(
            "SELECT a.* FROM job_attempts a JOIN jobs j ON j.current_attempt = a.id "
            f"WHERE a.backend = 'slurm' AND a.state IN ({marks}) ORDER BY a.created_at",
            sorted(states.HOLDING),
        )
    ]


def _follow(ctx: HubContext, api: ClusterApi, cluster: str, attempt: dict[str, Any]) -> bool:
    """One attempt, one step; True when something was stored."""
    job_id = attempt["external_id"].split("/", 1)[1]
    if not job_id:
        return _submit(ctx, api, cluster, attempt)
    if attempt["stop"] is not None:
        api.cancel(job_id)  # again each pass until Slurm says it ended: cancel is idempotent
    found = api.status(job_id)
    if found is None:
        found = ClusterJob(job_id, "FAILED", f"Slurm no longer knows job {job_id}")
    seen = reading(found)
    if seen.state == "pending":
        return _note(ctx, attempt, seen.reason or "pending in Slurm")
    unchanged = attempt["state"] == _stored_state(seen.state)
    stale_log = ctx.clock() - (attempt["last_report_at"] or 0) >= LOG_REFRESH_S
    if unchanged and not seen.final and not stale_log:
        return False
    tail, size = api.output(found)
    report = JobReport(
        attempt=attempt["id"], seq=attempt["seq"] + 1, state=seen.state, reason=seen.reason,
        exit_code=seen.exit_code, started_at=found.started_at, finished_at=found.finished_at,
        log_tail=tail, log_bytes=size,
    )  # fmt: skip
    where = f"Slurm cluster {cluster}, job {job_id} on {found.nodes or 'its nodes'}"
    return bool(ctx.store.write(lambda db: _store(ctx, db, attempt, report, where)))


def _stored_state(state: str) -> str:
    return states.STARTING if state == "starting" else state


def _submit(ctx: HubContext, api: ClusterApi, cluster: str, attempt: dict[str, Any]) -> bool:
    job = job_records.job_row(ctx.store.read(), attempt["job_id"])
    try:
        job_id = api.find(attempt["id"]) or api.submit(attempt["id"], job_records.spec_of(job))
    except ClusterError as exc:
        why = f"Slurm cluster {cluster} refused the job: {exc}"

        def refused(db: sqlite_utils.Database) -> bool:
            row, current = _current(db, attempt)
            if row is None:
                return False
            now = ctx.clock()
            db.table("job_attempts").update(attempt["id"], {"reason": why, "updated_at": now})
            job_records.end_attempt(db, current, row, "error", why, now)
            return True

        return bool(ctx.store.write(refused))

    def submitted(db: sqlite_utils.Database) -> bool:
        row, current = _current(db, attempt)
        if row is None:
            return False
        db.table("job_attempts").update(attempt["id"], {"external_id": f"{cluster}/{job_id}",
                                                        "updated_at": ctx.clock()})  # fmt: skip
        why = f"submitted to Slurm cluster {cluster} as job {job_id}"
        db.table("jobs").update(current["id"], {"reason": why, "updated_at": ctx.clock()})
        return True

    return bool(ctx.store.write(submitted))


def _current(
    db: sqlite_utils.Database, attempt: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The attempt as stored now, if it is still its job's current one and holding."""
    job = job_records.job_row(db, attempt["job_id"])
    rows = list(db.query("SELECT * FROM job_attempts WHERE id = ?", [attempt["id"]]))
    fresh = rows[0] if rows else None
    if fresh is None or fresh["state"] not in states.HOLDING:
        return None, job
    if job["current_attempt"] != attempt["id"]:
        return None, job
    return dict(fresh), job


def _note(ctx: HubContext, attempt: dict[str, Any], reason: str) -> bool:
    """A job still waiting inside Slurm: its reason says so (no event: not a transition)."""

    def op(db: sqlite_utils.Database) -> bool:
        row, job = _current(db, attempt)
        if row is None or job["reason"] == reason:
            return False
        db.table("jobs").update(job["id"], {"reason": reason, "updated_at": ctx.clock()})
        return True

    return bool(ctx.store.write(op))


def _store(
    ctx: HubContext,
    db: sqlite_utils.Database,
    attempt: dict[str, Any],
    report: JobReport,
    where: str,
) -> bool:
    row, _ = _current(db, attempt)
    if row is None or report.seq <= row["seq"]:
        return False
    job_reports.apply_report(db, report, ctx.clock(), where)
    return True
