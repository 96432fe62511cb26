"""The `jobs-schedule` pass: give up on attempts whose host has been silent past the
disconnect window, then admit and place queued jobs with `queue.schedule`, and act on its
preemptions. It runs inside the writer, so what it reads (the one GPU ledger, budgets) is what
it writes against: a deployment applied meanwhile waits for it, and rechecks its own plan.

Admission and placement are one step: a job is admitted (its `gpus * maxDuration` reserved)
only when it is also placed, so a job that cannot start holds no reservation and stays
`queued`, its reason updated (no event per pass: only real transitions are events).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlite_utils

from aiorch.hub.context import HubContext
from aiorch.hub.services import budgets, clusters, fleet_view, job_records, projects, replicas
from aiorch.jobs import states
from aiorch.jobs.queue import Decisions, Running, Waiting, job_demand, schedule
from edge_agent.contract.facts import stored_facts

log = logging.getLogger("aiorch.hub.jobs")
_HOLDING = sorted(states.HOLDING)


def schedule_pass(ctx: HubContext) -> str | None:
    """Every AIORCH_JOB_SCHEDULE_INTERVAL_S; a cheap read, and no write, when no job is queued
    or on a host. Hosts' last check-ins come from the heartbeat overlay, flushed or not."""
    now = ctx.clock()
    if not _busy(ctx.store.read()):
        return None

    def op(db: sqlite_utils.Database) -> str | None:
        touched: set[str] = set()
        lost = _give_up_on_silent(ctx, db, now, touched)
        placed, preempted = _place(ctx, db, now, touched)
        replicas.publish(ctx, db, touched, "hub")
        done = [f"{n} {what}" for n, what in ((lost, "lost"), (placed, "placed"),
                                              (preempted, "preempting")) if n]  # fmt: skip
        return ", ".join(done) or None

    return ctx.store.write(op)


def _busy(db: sqlite_utils.Database) -> bool:
    """Whether any job waits for a place or holds GPUs: the only ones the pass moves."""
    marks = ",".join("?" * (len(_HOLDING) + 1))
    query = f"SELECT 1 FROM jobs WHERE state IN ({marks}) LIMIT 1"
    return db.execute(query, [states.QUEUED, *_HOLDING]).fetchone() is not None


def _holding(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every job's current attempt that holds GPUs on an agent's host, with the agent's last
    check-in (a cluster's attempts are followed by `cluster_jobs`)."""
    return list(
        db.query(
            "SELECT a.*, ag.last_seen, ag.revoked_at FROM job_attempts a "
            "JOIN jobs j ON j.current_attempt = a.id LEFT JOIN agents ag ON ag.id = a.agent_id "
            f"WHERE a.backend = 'agent' AND a.state IN ({','.join('?' * len(_HOLDING))})",
            _HOLDING,
        )
    )


def _give_up_on_silent(
    ctx: HubContext, db: sqlite_utils.Database, now: float, touched: set[str]
) -> int:
    """node_lost once the host has been silent for the window (requeued if retry allows); a
    timeout once the attempt has outlived maxDuration plus the window with no final report."""
    window, lost = ctx.settings.job_disconnect_window_s, 0
    for attempt in _holding(db):
        last_seen = ctx.heartbeats.last_seen(attempt["agent_id"] or "", attempt["last_seen"])
        job = job_records.job_row(db, attempt["job_id"])
        since = attempt["started_at"] or attempt["created_at"]
        silent = last_seen is None or now - last_seen > window
        if not silent and now - since <= job["max_duration_s"] + window:
            continue
        ended: dict[str, Any] = {
            "finished_at": last_seen if silent else now,
            "state": states.NODE_LOST if silent else states.TIMED_OUT,
        }
        db.table("job_attempts").update(attempt["id"], {**ended, "updated_at": now})
        attempt.update(ended)
        touched.add(attempt["host"])
        if not silent:
            job_records.settle(db, job, attempt)
            why = "ran past maxDuration plus the disconnect window with no final report"
            job_records.transition(db, job, states.TIMED_OUT, why, now, attempt=attempt["id"])
            continue
        lost += 1
        why = f"host {attempt['host']} silent for more than {window:g}s"
        if attempt["stop"] == "cancel":
            job_records.settle(db, job, attempt)
            job = job_records.transition(db, job, states.NODE_LOST, why, now, attempt=attempt["id"])
            job_records.transition(db, job, states.CANCELLED, "cancelled while its host was lost",
                                   now, attempt=attempt["id"])  # fmt: skip
        else:
            job_records.end_attempt(db, job, attempt, states.NODE_LOST, why, now)
    return lost


def _place(
    ctx: HubContext, db: sqlite_utils.Database, now: float, touched: set[str]
) -> tuple[int, int]:
    queued = [
        dict(r)
        for r in db.query(
            "SELECT * FROM jobs WHERE state = ? AND (not_before IS NULL OR not_before <= ?)",
            [states.QUEUED, now],
        )
    ]
    if not queued:
        return 0, 0
    views, known = fleet_view.host_views(ctx, db), clusters.known(db)
    by_id, waiting, may_use, aimed = {j["id"]: j for j in queued}, [], {}, {}
    for job in queued:
        spec = job_records.spec_of(job)
        if spec.spec.nodes > 1 or spec.spec.cluster is not None:
            picked = clusters.pick(known, spec.spec.cluster)
            if isinstance(picked, str):
                _wait(db, job, picked, now)
                continue
            aimed[job["id"]] = picked.name
        if job["project"] not in may_use:
            allowed = projects.placeable(db, job["project"], views)
            may_use[job["project"]] = frozenset(h.name for h in allowed)
        waiting.append(
            Waiting(
                job_id=job["id"],
                project=job["project"],
                priority=job["priority"],
                submitted_at=job["submitted_at"],
                demand=job_demand(spec),
                gpu_seconds=spec.gpu_seconds(),
                hosts=may_use[job["project"]],
                nodes=spec.spec.nodes,
                cluster=job["id"] in aimed,
            )
        )
    running = []
    for attempt in _holding(db):
        owner = job_records.job_row(db, attempt["job_id"])
        resources = job_records.spec_of(owner).spec.resources
        running.append(
            Running(
                job_id=owner["id"],
                project=owner["project"],
                priority=owner["priority"],
                preemptible=bool(owner["preemptible"]),
                host=attempt["host"],
                gpus=tuple(json.loads(attempt["gpus"])),
                state=attempt["state"],
                stopping=attempt["stop"] is not None,  # asked to stop: wait, never pick again
                cpu=resources.cpu,
                memory_mib=resources.memory_mib,
            )
        )
    allowances = budgets.allowances(db, {j.project for j in waiting}, now)
    decisions = schedule(waiting, views, allowances, running)
    placed = _apply(db, decisions, by_id, now, touched)
    placed += _hand_over(db, decisions, by_id, aimed, now)
    return placed, _preempt(db, decisions, now, touched)


def _wait(db: sqlite_utils.Database, job: dict[str, Any], reason: str, now: float) -> None:
    if job["reason"] != reason:
        db.table("jobs").update(job["id"], {"reason": reason, "updated_at": now})


def _apply(
    db: sqlite_utils.Database,
    decisions: Decisions,
    by_id: dict[int, dict[str, Any]],
    now: float,
    touched: set[str],
) -> int:
    for job_id, reason in decisions.waiting.items():
        _wait(db, by_id[job_id], reason, now)
    for placed in decisions.placed:
        job = _admit(db, by_id[placed.job_id], now)
        number = job["attempts"] + 1
        attempt_id = f"{job['id']}.{number}"
        host = db.execute(
            "SELECT agent_id, facts FROM hosts WHERE name = ?", [placed.host]
        ).fetchone()
        facts = stored_facts(host[1]) if host and host[1] else None
        simulated = len(placed.gpus) if facts is not None and facts.gpus_simulated else 0
        db.table("job_attempts").insert(
            {"id": attempt_id, "job_id": job["id"], "number": number, "backend": "agent",
             "host": placed.host, "agent_id": host[0] if host else None,
             "gpus": json.dumps(list(placed.gpus)), "simulated_gpus": simulated,
             "state": states.SCHEDULED, "created_at": now, "updated_at": now}
        )  # fmt: skip
        where = f"placed on {placed.host}" + (f" (GPUs {list(placed.gpus)})" if placed.gpus else "")
        job_records.transition(db, job, states.SCHEDULED, where, now, attempt=attempt_id,
                               attempts=number, current_attempt=attempt_id)  # fmt: skip
        touched.add(placed.host)
    return len(decisions.placed)


def _admit(db: sqlite_utils.Database, job: dict[str, Any], now: float) -> dict[str, Any]:
    reserve = job_records.spec_of(job).gpu_seconds()
    return job_records.transition(
        db, job, states.ADMITTED, f"admitted: {reserve / 3600:.2f} GPU-hours reserved", now,
        reserved_gpu_s=float(reserve),
    )  # fmt: skip


def _hand_over(
    db: sqlite_utils.Database,
    decisions: Decisions,
    by_id: dict[int, dict[str, Any]],
    aimed: dict[int, str],
    now: float,
) -> int:
    """Admitted cluster jobs get an attempt with no cluster job id yet: `cluster_jobs`
    submits it outside the writer (the id names the submission, so a crash in between
    finds it again instead of submitting twice)."""
    for job_id in decisions.to_cluster:
        job, cluster = _admit(db, by_id[job_id], now), aimed[job_id]
        number = job["attempts"] + 1
        attempt_id = f"{job['id']}.{number}"
        db.table("job_attempts").insert(
            {"id": attempt_id, "job_id": job["id"], "number": number, "backend": "slurm",
             "external_id": f"{cluster}/", "state": states.SCHEDULED, "created_at": now,
             "updated_at": now}
        )  # fmt: skip
        job_records.transition(db, job, states.SCHEDULED, f"handed to Slurm cluster {cluster}",
                               now, attempt=attempt_id, attempts=number,
                               current_attempt=attempt_id)  # fmt: skip
    return len(decisions.to_cluster)


def _preempt(db: sqlite_utils.Database, decisions: Decisions, now: float, touched: set[str]) -> int:
    """The victims' attempts are asked to stop (`stop = preempt`); their jobs say for whom.
    They become `preempted` (and requeue) when their agents report them stopped."""
    for decision in decisions.preempt:
        victim = job_records.job_row(db, decision.victim)
        winner = job_records.job_row(db, decision.for_job)
        attempt = victim["current_attempt"]
        row = db.execute("SELECT host, stop FROM job_attempts WHERE id = ?", [attempt]).fetchone()
        if row is None or row[1] is not None:
            continue  # already asked to stop
        db.execute("UPDATE job_attempts SET stop = 'preempt', updated_at = ? WHERE id = ?",
                   [now, attempt])  # fmt: skip
        why = f"preempted by job {winner['name']}: {decision.reason}"
        db.table("jobs").update(victim["id"], {"reason": why, "updated_at": now})
        touched.add(row[0])
    return len(decisions.preempt)
