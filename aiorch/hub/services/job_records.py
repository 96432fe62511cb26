"""Jobs in the store: the spec (secret values sealed), and every state change of a job with
its reason, as one event row and one audit record, through the transition table.

Both the scheduling pass and the agents' reports move jobs, and both end attempts the same
way: the budget is settled from the attempt's real run time, then the job is requeued if its
retry policy covers why the attempt ended, or it ends.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from aiorch.hub.context import HubContext
from aiorch.hub.sealing import seal_scope
from aiorch.hub.services import audit
from aiorch.jobs import states
from aiorch.jobs.spec import JobSpec, parse_job


def to_store(ctx: HubContext, spec: JobSpec) -> str:
    document = spec.model_dump(mode="json", by_alias=True)
    secrets = {k: v.get_secret_value() for k, v in spec.spec.secret_env.items()}
    document["spec"]["secretEnv"] = ctx.sealer.seal_env(
        secrets, spec.project, seal_scope(spec.name)
    )
    return json.dumps(document, sort_keys=True)


def spec_of(job: dict[str, Any]) -> JobSpec:
    """A stored job's spec, its secret values still sealed (they are opened only on their way
    to the agent, as deployments' are)."""
    return parse_job(json.loads(job["spec"]))


def job_row(db: sqlite_utils.Database, job_id: int) -> dict[str, Any]:
    return dict(next(db.query("SELECT * FROM jobs WHERE id = ?", [job_id])))


def transition(
    db: sqlite_utils.Database,
    job: dict[str, Any],
    to: str,
    reason: str,
    now: float,
    actor: str = "hub",
    attempt: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Move `job` to `to` (Conflict if the table forbids it), store why, audit it; returns
    the row as it now is."""
    states.check(job["state"], to)
    changes = {"state": to, "reason": reason, "updated_at": now, **fields}
    if to in states.TERMINAL:
        changes["finished_at"] = now
    db.table("jobs").update(job["id"], changes)
    db.table("job_events").insert(
        {
            "job_id": job["id"],
            "attempt": attempt,
            "ts": now,
            "from_state": job["state"],
            "to_state": to,
            "reason": reason,
        }
    )
    details = {"from": job["state"], "to": to, "reason": reason, "attempt": attempt}
    audit.record(db, actor, f"job.{to}", f"job:{job['name']}", details, ts=now)
    return {**job, **changes}


def attempt_gpus(attempt: dict[str, Any]) -> int:
    return int(attempt["simulated_gpus"]) or len(json.loads(attempt["gpus"]))


def settle(db: sqlite_utils.Database, job: dict[str, Any], attempt: dict[str, Any]) -> None:
    """The reservation is given back and the attempt's real GPU time is charged."""
    ran, gpus = 0.0, attempt_gpus(attempt)
    if attempt.get("backend", "agent") != "agent":  # a cluster's nodes: what the job asked
        gpus = job["gpus"] * job["nodes"]
    if attempt.get("started_at") is not None and attempt.get("finished_at") is not None:
        ran = max(0.0, attempt["finished_at"] - attempt["started_at"])
    used = job["used_gpu_s"] + gpus * ran
    db.table("jobs").update(job["id"], {"used_gpu_s": used, "reserved_gpu_s": 0.0})
    job.update(used_gpu_s=used, reserved_gpu_s=0.0)


def end_attempt(
    db: sqlite_utils.Database,
    job: dict[str, Any],
    attempt: dict[str, Any],
    ending: str,
    reason: str,
    now: float,
    exit_code: int | None = None,
) -> dict[str, Any]:
    """The attempt is over (`ending`: a job state, or "error"): settle the budget, then
    requeue the job if its retry policy covers `ending` and attempts remain, else end it."""
    settle(db, job, attempt)
    retry = spec_of(job).spec.retry
    retrying = ending in ("error", states.PREEMPTED, states.NODE_LOST)
    cause = "error" if ending == "error" else ending
    extra: dict[str, Any] = {} if exit_code is None else {"exit_code": exit_code}
    aid = attempt["id"]
    if ending in (states.PREEMPTED, states.NODE_LOST):
        job = transition(db, job, ending, reason, now, attempt=aid, **extra)
    if retrying and cause in retry.on and job["attempts"] <= retry.limit:
        backoff = retry.backoff if cause == "error" else 0
        left = retry.limit - job["attempts"] + 1
        why = f"{reason}; retrying ({left} attempt(s) left)"
        return transition(
            db, job, states.QUEUED, why, now, attempt=aid, not_before=now + backoff, **extra
        )
    if retrying:
        end = states.FAILED
        if cause in retry.on:
            reason = f"{reason}; no retries left ({retry.limit} allowed)"
    else:
        end = ending
    return transition(db, job, end, reason, now, attempt=aid, **extra)
