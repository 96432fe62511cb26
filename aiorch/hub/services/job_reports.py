"""What agents report about the job attempts they run, applied to the jobs.

Fencing: a report moves a job only if it is about the job's current attempt, from the agent
that attempt was placed with, with a `seq` newer than the last one applied, and the attempt
still holds its GPUs. Anything else (a late report of an old attempt, a replay after a cut)
changes nothing. Check-ins stay cheap: the writer is asked for nothing unless a report is new.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import Any

import sqlite_utils

from aiorch.hub.context import HubContext
from aiorch.hub.services import job_records, replicas
from aiorch.jobs import states
from edge_agent.contract.fields import ContractError
from edge_agent.contract.job import JobReport, parse_job_reports

log = logging.getLogger("aiorch.hub.jobs")


def _fresh(
    db: sqlite_utils.Database, agent_id: str, reports: dict[str, JobReport]
) -> list[JobReport]:
    """The reports that would change something now; the others are counted at debug."""
    marks = ",".join("?" * len(reports))
    rows = {
        r[0]: r[1:]
        for r in db.execute(
            "SELECT a.id, a.seq, a.agent_id, a.state, j.current_attempt FROM job_attempts a "
            f"JOIN jobs j ON j.id = a.job_id WHERE a.id IN ({marks})",
            list(reports),
        )
    }
    fresh = []
    for attempt, report in reports.items():
        seq, owner, state, current = rows.get(attempt, (None, None, None, None))
        if (
            owner == agent_id
            and current == attempt
            and state in states.HOLDING
            and (report.seq > seq)
        ):
            fresh.append(report)
    if len(fresh) < len(reports):
        log.debug("agent %s: %d job report(s) ignored (stale, replayed or fenced)",
                  agent_id, len(reports) - len(fresh))  # fmt: skip
    return fresh


async def ingest(ctx: HubContext, agent_id: str, raw: dict[str, Any]) -> int:
    """Apply an agent's job reports; returns how many changed something."""
    try:
        reports = parse_job_reports(raw)
    except ContractError as exc:
        log.warning("agent %s: job reports ignored: %s", agent_id, exc)
        return 0
    if not reports or not _fresh(ctx.store.read(), agent_id, reports):
        return 0
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> int:
        fresh = _fresh(db, agent_id, reports)  # again, inside the writer: it is the one truth
        hosts = {apply_report(db, report, now) for report in fresh}
        replicas.publish(ctx, db, {h for h in hosts if h}, "hub")
        return len(fresh)

    return await ctx.store.awrite(op)


def apply_report(
    db: sqlite_utils.Database, report: JobReport, now: float, where: str | None = None
) -> str | None:
    """Store the report on its attempt and move the job; returns the host to publish again
    when the attempt ended (it leaves the host's desired state). `where` names a place other
    than the attempt's host in the reasons (a cluster)."""
    attempt = dict(next(db.query("SELECT * FROM job_attempts WHERE id = ?", [report.attempt])))
    state = {"pending": states.STARTING, "starting": states.STARTING}.get(
        report.state, report.state
    )
    changes = {
        "seq": report.seq, "state": state, "reason": report.reason,
        "exit_code": report.exit_code, "started_at": report.started_at,
        "finished_at": report.finished_at, "log_tail": report.log_tail,
        "log_bytes": report.log_bytes, "updated_at": now, "last_report_at": now,
        "artifacts": json.dumps([asdict(a) for a in report.artifacts]),
    }  # fmt: skip
    db.table("job_attempts").update(report.attempt, changes)
    attempt.update(changes)
    job = job_records.job_row(db, attempt["job_id"])
    aid, host = report.attempt, attempt["host"]
    place = where or host
    lost = report.state in (states.NODE_LOST, states.PREEMPTED)  # a cluster's own doing
    if not report.final and not lost:
        if state == states.STARTING and job["state"] == states.SCHEDULED:
            job_records.transition(db, job, states.STARTING, f"starting on {place}", now,
                                   attempt=aid)  # fmt: skip
        elif state == states.RUNNING and job["state"] in (states.SCHEDULED, states.STARTING):
            job_records.transition(db, job, states.RUNNING, f"running on {place}", now, attempt=aid)
        return None
    code = report.exit_code
    if lost:
        job_records.end_attempt(db, job, attempt, report.state, report.reason or state, now)
    elif report.state == "exited" and code == 0:
        job_records.settle(db, job, attempt)
        job_records.transition(db, job, states.SUCCEEDED, "exited with code 0", now,
                               attempt=aid, exit_code=0)  # fmt: skip
    elif report.state == "exited":
        job_records.end_attempt(db, job, attempt, "error", f"exited with code {code}", now, code)
    elif report.state == "timed_out":
        job_records.settle(db, job, attempt)
        why = f"ran past maxDuration ({job['max_duration_s']}s)"
        job_records.transition(db, job, states.TIMED_OUT, why, now, attempt=aid)
    elif report.state == "stopped" and attempt["stop"] == "cancel":
        job_records.settle(db, job, attempt)
        job_records.transition(db, job, states.CANCELLED, job["reason"] or "cancelled", now,
                               attempt=aid)  # fmt: skip
    elif report.state == "stopped" and attempt["stop"] == "preempt":
        job_records.end_attempt(db, job, attempt, states.PREEMPTED, job["reason"], now)
    else:  # failed to start, or stopped on no request of ours
        why = f"{report.state}: {report.reason or 'no reason given'}"
        job_records.end_attempt(db, job, attempt, "error", why, now)
    return str(host) if host else None
