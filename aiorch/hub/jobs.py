"""Every scheduled background job of the hub, registered in this one place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from apscheduler.schedulers.base import BaseScheduler

from aiorch.hub.context import HubContext
from aiorch.hub.services import (
    agents,
    audit_checkpoints,
    autoscaling,
    cluster_jobs,
    drift,
    enrollment,
    images,
    job_scheduling,
    machine_actions,
    machines,
    models,
    retention,
    rollouts,
    telemetry,
)
from aiorch.hub.slurm_rest import slurm_backends

log = logging.getLogger("aiorch.hub.jobs")


def _logged(name: str, job: Callable[[HubContext], Any], ctx: HubContext) -> Callable[[], None]:
    def run() -> None:
        try:
            result = job(ctx)
        except Exception:
            log.exception("job %s failed", name)
            return
        if result:
            log.info("job %s: %s", name, result)

    return run


def flush_heartbeats(ctx: HubContext) -> None:
    ctx.heartbeats.flush(ctx.store)


def renew_server_certificate(ctx: HubContext) -> str | None:
    """The hub's own certificate, renewed at two thirds of its life (new handshakes get it)."""
    if ctx.listener is None or not ctx.listener.ensure(ctx.authority, ctx.clock()):
        return None
    ctx.listener.reload(ctx.authority)
    return "renewed the hub's server certificate"


def follow_clusters(ctx: HubContext) -> str | None:
    return cluster_jobs.follow_pass(ctx, slurm_backends(ctx))


def register_jobs(scheduler: BaseScheduler, ctx: HubContext) -> None:
    every, retain = ctx.settings.job_interval_s, ctx.settings.retention_interval_s
    jobs: dict[str, tuple[float, Callable[[HubContext], Any]]] = {
        "flush-heartbeats": (ctx.settings.heartbeat_flush_s, flush_heartbeats),
        "mark-agents-offline": (every, agents.mark_offline),
        "expire-enrollment-tokens": (every, enrollment.expire_tokens),
        "telemetry-downsample": (ctx.settings.downsample_interval_s, telemetry.downsample),
        "telemetry-retention": (retain, telemetry.apply_retention),
        "runs-retention": (retain, retention.expire_runs),
        "agents-retention": (retain, retention.forget_gone_agents),
        "revisions-retention": (retain, retention.prune_revisions),
        "images-gc": (retain, images.collect_garbage),
        "models-gc": (retain, models.collect_garbage),
        "rollouts-progress": (ctx.settings.rollout_interval_s, rollouts.progress),
        "deployments-autoscale": (ctx.settings.autoscale_interval_s, autoscaling.autoscale),
        "audit-checkpoint": (every, audit_checkpoints.checkpoint),
        "tls-renew": (retain, renew_server_certificate),
        "jobs-schedule": (ctx.settings.job_schedule_interval_s, job_scheduling.schedule_pass),
        "jobs-clusters": (ctx.settings.job_schedule_interval_s, follow_clusters),
        "machines-deadlines": (every, machines.expire_deadlines),
        "machines-release-retired": (every, machine_actions.release_retired),
    }
    if ctx.settings.drift_interval_s > 0:  # 0 turns the drift check off
        jobs["drift-check"] = (ctx.settings.drift_interval_s, drift.check_drift)
    for name, (seconds, job) in jobs.items():
        scheduler.add_job(
            _logged(name, job, ctx),
            "interval",
            seconds=seconds,
            id=name,
            max_instances=1,
            coalesce=True,
        )
