"""Slurm as a cluster backend: how a job becomes a slurmrestd submission, and how Slurm's job
states read as aiorch's. Pure: the hub's client (`aiorch.hub.slurm_rest`) does the talking.

The hub never picks the nodes of a multi-node job; Slurm does (an allocation is all its nodes
or none). What the hub keeps is the rest of a job's life: the queue and budget before it,
the attempt and its states, logs, cancel and timeouts, as for jobs on agents.

Another engine plugs in behind the same `ClusterBackend` (k3s + Kueue: a Job in a
LocalQueue, its `Workload` conditions read as these states; README "Jobs on a cluster").
"""

from __future__ import annotations

import shlex
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from aiorch.jobs.spec import JobSpec

API = "v0.0.38"  # Debian 12's slurmrestd without slurmdbd serves up to this one
SCRIPT_SHELL = "#!/bin/sh"


@dataclass(frozen=True)
class ClusterJob:
    """What the cluster says of one submitted job (Slurm's own words)."""

    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, ...
    reason: str | None = None
    exit_code: int | None = None
    nodes: str = ""
    batch_host: str | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class Reading:
    """A cluster job as aiorch's report states: `pending` (waits in the cluster's queue),
    `starting`, `running`, or an ending (`exited`, `timed_out`, `stopped`, `failed`,
    `node_lost`, `preempted`)."""

    state: str
    reason: str | None = None
    exit_code: int | None = None

    @property
    def final(self) -> bool:
        return self.state not in ("pending", "starting", "running")


class ClusterApi(Protocol):
    """One open conversation with a cluster's controller."""

    def submit(self, name: str, spec: JobSpec) -> str: ...
    def find(self, name: str) -> str | None: ...
    def status(self, job_id: str) -> ClusterJob | None: ...
    def cancel(self, job_id: str) -> None: ...
    def output(self, job: ClusterJob) -> tuple[str, int]: ...


class ClusterBackend(Protocol):
    """A cluster the hub hands multi-node jobs to."""

    name: str

    def session(self) -> AbstractContextManager[ClusterApi]: ...


class ClusterError(Exception):
    """The cluster could not be reached or refused a request; the message says why."""


_WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
_STARTING = {"CONFIGURING"}
_RUNNING = {"RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
_ENDINGS = {
    "TIMEOUT": "timed_out",
    "DEADLINE": "timed_out",
    "CANCELLED": "stopped",
    "NODE_FAIL": "node_lost",
    "PREEMPTED": "preempted",
    "BOOT_FAIL": "failed",
    "OUT_OF_MEMORY": "failed",
    "REVOKED": "failed",
    "SPECIAL_EXIT": "failed",
}


def reading(job: ClusterJob) -> Reading:
    """Slurm's state (and reason, exit code) as aiorch reads it."""
    state, why = job.state.upper(), job.reason if job.reason not in (None, "None") else None
    if state in _WAITING:
        return Reading("pending", f"{state.lower()} in Slurm" + (f" ({why})" if why else ""))
    if state in _STARTING:
        return Reading("starting", why)
    if state in _RUNNING:
        return Reading("running", why)
    if state == "COMPLETED":
        return Reading("exited", None, 0)
    if state == "FAILED":
        code = job.exit_code if job.exit_code else 1  # Slurm says FAILED: never a success
        return Reading("exited", why, code)
    ending = _ENDINGS.get(state, "failed")
    return Reading(ending, f"Slurm: {state}" + (f" ({why})" if why else ""), job.exit_code)


def script(spec: JobSpec) -> str:
    """The batch script: one task per node, each running the job's command (no container:
    Debian's Slurm has no pyxis, so the nodes run the command as the job user)."""
    nodes = spec.spec.nodes
    step = shlex.join(["srun", f"--nodes={nodes}", "--ntasks-per-node=1", *spec.spec.command])
    return f"{SCRIPT_SHELL}\nexec {step}\n"


def submission(name: str, spec: JobSpec, output_dir: str) -> dict:
    """The body of `POST /slurm/v0.0.38/job/submit` for `spec`, named `name` (the attempt:
    a submission lost in a crash is found again by it)."""
    work = spec.spec
    environment = {"PATH": "/usr/local/bin:/usr/bin:/bin", **work.env}
    job: dict = {
        "name": name,
        "nodes": [work.nodes, work.nodes],
        "tasks": work.nodes,  # with one per node: v0.0.38 may read `nodes` as a minimum of 1
        "tasks_per_node": 1,
        "time_limit": max(1, -(-work.max_duration // 60)),  # minutes, rounded up
        "current_working_directory": output_dir,
        "standard_output": f"{output_dir}/%j.out",
        "standard_error": f"{output_dir}/%j.out",
        "environment": environment,
        "requeue": False,  # aiorch's retry policy decides what runs again
    }
    if work.resources.gpus:
        job["gpus_per_node"] = str(work.resources.gpus)
    if work.resources.memory_mib:
        job["memory_per_node"] = work.resources.memory_mib
    return {"script": script(spec), "job": job}


def on_cluster(spec: JobSpec) -> bool:
    """Whether the job goes to a cluster rather than to one agent's host."""
    return spec.spec.nodes > 1 or spec.spec.cluster is not None


def unsupported(spec: JobSpec) -> list[str]:
    """What a cluster job asks for that the Slurm backend cannot give, one line per field:
    the nodes run the command itself, with no container to hold mounts, secrets or models."""
    work, why = spec.spec, "is not supported on a Slurm cluster (its nodes run the command "
    fields = {"spec.secretEnv": work.secret_env, "spec.volumes": work.volumes,
              "spec.models": work.models, "spec.artifacts": work.artifacts}  # fmt: skip
    return [f"{name} {why}without a container)" for name, value in fields.items() if value]
