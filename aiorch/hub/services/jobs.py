"""Jobs as users see them: submit, list, show, logs and cancel.

Submit only stores the job `queued`; the scheduling pass (job_scheduling) admits and places
it, and the agents' reports (job_reports) move it on. Every change goes through
job_records.transition, so each has its reason, its event and its audit record.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from aiorch.deploy.host_paths import refuse_outside
from aiorch.deploy.spec import SpecError
from aiorch.errors import Conflict, NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import agents, audit, authz, images, job_records, replicas
from aiorch.hub.services.auth import Principal
from aiorch.hub.services.projects import allowed_host_paths
from aiorch.jobs import slurm, states
from aiorch.jobs.spec import JobSpec, load_job

MAX_LIST = 1000


def _deliverable(ctx: HubContext, text: str, principal: Principal | None) -> JobSpec:
    spec = load_job(text)
    if principal is not None:
        authz.authorize(principal, "job.submit", authz.in_project(spec.project, "job"))
    db = ctx.store.read()
    if slurm.on_cluster(spec):
        if problems := slurm.unsupported(spec):
            raise SpecError(problems)
        return spec  # the image is not used: the nodes run the command (aiorch.jobs.slurm)
    if images.resolve(db, spec.spec.image) is None:
        raise SpecError([f"spec.image: {spec.spec.image} is not in the hub's image store"])
    volumes = [
        (f"spec.volumes[{i}] (mountPath {v.mount_path})", v.host_path)
        for i, v in enumerate(spec.spec.volumes)
    ]
    refuse_outside(spec.project, allowed_host_paths(db, spec.project), volumes)
    return spec


def plan(ctx: HubContext, text: str, principal: Principal | None = None) -> dict[str, Any]:
    """What submitting would store; changes nothing."""
    spec = _deliverable(ctx, text, principal)
    exists = ctx.store.read().execute("SELECT 1 FROM jobs WHERE name = ?", [spec.name])
    return {
        "name": spec.name,
        "project": spec.project,
        "kind": "Job",
        "exists": exists.fetchone() is not None,
        "gpus": spec.spec.resources.gpus,
        "nodes": spec.spec.nodes,
        "gpu_hours_reserved": spec.gpu_seconds() / 3600,
    }


def submit(
    ctx: HubContext, text: str, actor: str, principal: Principal | None = None
) -> dict[str, Any]:
    """Store the job `queued`; 409 if the name is taken (job names are fleet-wide)."""
    spec = _deliverable(ctx, text, principal)
    stored, now = job_records.to_store(ctx, spec), ctx.clock()
    work = spec.spec

    def op(db: sqlite_utils.Database) -> None:
        if db.execute("SELECT 1 FROM jobs WHERE name = ?", [spec.name]).fetchone():
            raise Conflict(f"a job named {spec.name} exists; pick another name")
        row = {
            "name": spec.name, "project": spec.project, "spec": stored,
            "state": states.QUEUED, "reason": "submitted", "priority": work.priority,
            "preemptible": int(work.preemptible), "gpus": work.resources.gpus,
            "nodes": work.nodes, "max_duration_s": work.max_duration, "submitted_by": actor,
            "submitted_at": now, "updated_at": now,
        }  # fmt: skip
        job_id = db.table("jobs").insert(row).last_pk
        db.table("job_events").insert(
            {"job_id": job_id, "ts": now, "to_state": states.QUEUED, "reason": "submitted"}
        )
        audit.record(db, actor, "job.submit", f"job:{spec.name}", {"project": spec.project}, ts=now)

    ctx.store.write(op)
    return show(ctx, spec.name)


def project_of(ctx: HubContext, name: str) -> str:
    row = ctx.store.read().execute("SELECT project FROM jobs WHERE name = ?", [name]).fetchone()
    if row is None:
        raise NotFound(f"no job named {name}")
    return str(row[0])


def _attempt_view(attempt: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": attempt["id"],
        "backend": attempt["backend"],
        "host": attempt["host"],
        "cluster_job": attempt["external_id"] if attempt["backend"] != "agent" else None,
        "gpus": json.loads(attempt["gpus"]),
        "simulated_gpus": attempt["simulated_gpus"],
        "state": attempt["state"],
        "stop": attempt["stop"],
        "exit_code": attempt["exit_code"],
        "started_at": attempt["started_at"],
        "finished_at": attempt["finished_at"],
        "artifacts": json.loads(attempt["artifacts"]),
    }


def _confirmed(ctx: HubContext, db: sqlite_utils.Database, job: dict[str, Any]) -> bool:
    """False while the host of a job holding GPUs has gone quiet (not yet node_lost). A
    cluster's jobs are confirmed by the cluster each pass."""
    if job["state"] not in states.HOLDING or job["current_attempt"] is None:
        return True
    row = db.execute(
        "SELECT ag.id, ag.last_seen, ag.revoked_at, a.backend FROM job_attempts a "
        "LEFT JOIN agents ag ON ag.id = a.agent_id WHERE a.id = ?",
        [job["current_attempt"]],
    ).fetchone()
    if row is not None and row[3] != "agent":
        return True
    if row is None or row[0] is None:
        return False
    last_seen = ctx.heartbeats.last_seen(row[0], row[1])
    return agents.liveness(ctx, last_seen, row[2]) == "online"


def view(
    ctx: HubContext, db: sqlite_utils.Database, job: dict[str, Any], events: bool = True
) -> dict[str, Any]:
    attempt = None
    if job["current_attempt"] is not None:
        rows = list(db.query("SELECT * FROM job_attempts WHERE id = ?", [job["current_attempt"]]))
        attempt = _attempt_view(rows[0]) if rows else None
    out = {
        key: job[key]
        for key in ("name", "project", "state", "reason", "priority", "gpus", "nodes",
                    "max_duration_s", "attempts", "exit_code", "submitted_by", "submitted_at",
                    "updated_at", "finished_at", "not_before")
    }  # fmt: skip
    out.update(
        confirmed=_confirmed(ctx, db, job),
        preemptible=bool(job["preemptible"]),
        attempt=attempt,
        gpu_hours_reserved=job["reserved_gpu_s"] / 3600,
        gpu_hours_used=job["used_gpu_s"] / 3600,
    )
    if events:
        out["events"] = [
            {"ts": e[0], "from": e[1], "to": e[2], "reason": e[3], "attempt": e[4]}
            for e in db.execute(
                "SELECT ts, from_state, to_state, reason, attempt FROM job_events "
                "WHERE job_id = ? ORDER BY id",
                [job["id"]],
            )
        ]
    return out


def _job(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM jobs WHERE name = ?", [name]))
    if not rows:
        raise NotFound(f"no job named {name}")
    return dict(rows[0])


def show(ctx: HubContext, name: str) -> dict[str, Any]:
    db = ctx.store.read()
    return view(ctx, db, _job(db, name))


def list_jobs(
    ctx: HubContext,
    projects: frozenset[str] | None,
    project: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Newest first, of the projects the caller may read."""
    where, params = authz.sql_in("project", projects)
    clauses = [where] if where else []
    for column, value in (("project", project), ("state", state)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
    db = ctx.store.read()
    rows = db.query(f"{sql} ORDER BY submitted_at DESC, id DESC LIMIT ? OFFSET ?",
                    [*params, min(limit, MAX_LIST), offset])  # fmt: skip
    return [view(ctx, db, dict(r), events=False) for r in rows]


def logs(ctx: HubContext, name: str, attempt: str | None = None) -> dict[str, Any]:
    db = ctx.store.read()
    job = _job(db, name)
    wanted = attempt or job["current_attempt"]
    rows = list(
        db.query(
            "SELECT id, state, log_tail, log_bytes FROM job_attempts WHERE id = ? AND job_id = ?",
            [wanted, job["id"]],
        )
    )
    if not rows:
        if attempt is not None:
            raise NotFound(f"job {name} has no attempt {attempt}")
        return {"attempt": None, "state": job["state"], "log_tail": "", "log_bytes": 0}
    row = rows[0]
    return {"attempt": row["id"], "state": row["state"], "log_tail": row["log_tail"],
            "log_bytes": row["log_bytes"]}  # fmt: skip


def cancel(ctx: HubContext, name: str, actor: str) -> dict[str, Any]:
    """A job not on a host is cancelled at once; a running one is asked to stop (its agent
    reports `stopped`, and the job is then `cancelled`)."""
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        job = _job(db, name)
        if job["state"] in states.TERMINAL:
            raise Conflict(f"job {name} is already {job['state']}")
        audit.record(db, actor, "job.cancel", f"job:{name}", {"state": job["state"]}, ts=now)
        if job["state"] not in states.HOLDING:
            job_records.transition(db, job, states.CANCELLED, f"cancelled by {actor}", now, actor,
                                   reserved_gpu_s=0.0)  # fmt: skip
            return
        attempt = job["current_attempt"]
        db.execute("UPDATE job_attempts SET stop = 'cancel', updated_at = ? WHERE id = ?",
                   [now, attempt])  # fmt: skip
        db.execute("UPDATE jobs SET reason = ?, updated_at = ? WHERE id = ?",
                   [f"cancel requested by {actor}", now, job["id"]])  # fmt: skip
        host = db.execute("SELECT host FROM job_attempts WHERE id = ?", [attempt]).fetchone()
        if host[0] is not None:  # a cluster's job: the cluster pass cancels it there
            replicas.publish(ctx, db, {host[0]}, actor)

    ctx.store.write(op)
    return show(ctx, name)
