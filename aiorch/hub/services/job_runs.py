"""The job attempts a host's agent is to run, as entries of its desired state ("jobs").

An attempt is there from its placement until the hub stores its final report or gives up on
it (node_lost): then it leaves the document and the agent stops any container still running
it. Secret values stay sealed in the store and are opened only on their way to the agent.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from aiorch.hub.services import images, job_records, replicas
from aiorch.jobs.states import HOLDING
from edge_agent.contract.job import JobRun, job_entry

SITE_ARTIFACT_LIMIT_BYTES = 1 << 30  # larger artifacts stay at the site, by reference


def job_entries(db: sqlite_utils.Database, host: str) -> list[dict[str, Any]]:
    """The attempts placed on `host` that still hold GPUs there, oldest first."""
    marks = ",".join("?" * len(HOLDING))
    entries = []
    for attempt in db.query(
        "SELECT a.*, j.spec AS job_spec FROM job_attempts a JOIN jobs j ON j.id = a.job_id "
        f"WHERE a.host = ? AND a.state IN ({marks}) ORDER BY a.created_at, a.id",
        [host, *sorted(HOLDING)],
    ):
        spec = job_records.spec_of({"spec": attempt["job_spec"]})
        work = spec.spec
        stored = images.resolve(db, work.image) or {}
        simulated = attempt["simulated_gpus"]
        run = JobRun(
            attempt=attempt["id"],
            job=spec.name,
            project=spec.project,
            **replicas.container_parts(work, stored),
            secret_env={k: v.get_secret_value() for k, v in work.secret_env.items()},  # sealed
            gpus=() if simulated else tuple(json.loads(attempt["gpus"])),
            simulated_gpus=simulated,
            max_duration_s=work.max_duration,
            artifacts=tuple(work.artifacts),
            site_artifact_limit_bytes=SITE_ARTIFACT_LIMIT_BYTES,
            stop=attempt["stop"],
            grace_s=work.grace_period,
            models=replicas.stored_models(db, spec),
        )
        entries.append(job_entry(run))
    return entries
