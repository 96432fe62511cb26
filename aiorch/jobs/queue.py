"""The job queue's scheduling pass: which waiting jobs start now, on which host and GPUs, and
why the others wait.

Pure, like placement: the hub passes the waiting jobs, the fleet as `HostView`s (whose
`allocated_gpus` already count what deployments and running jobs hold: one ledger), what each
project may still use, and the attempts running now; `schedule` returns decisions. Jobs go by
priority (higher first), then age; a job that does not fit is passed over, never blocking the
smaller jobs behind it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from aiorch.deploy.eligibility import Candidate, Demand, screen
from aiorch.deploy.hosts import HostView
from aiorch.jobs.spec import JobSpec


def job_demand(job: JobSpec, regions: frozenset[str] | None = None) -> Demand:
    """What one node of `job` needs, in placement's terms (a job publishes no ports)."""
    work, res = job.spec, job.spec.resources
    if work.placement.residency is not None:
        asked = frozenset(work.placement.residency.region)
        regions = asked if regions is None else asked & regions
    return Demand(
        gpus=res.gpus,
        gpu_product=res.gpu_product,
        min_gpu_memory_mib=res.min_gpu_memory_mib,
        cpu=res.cpu,
        memory_mib=res.memory_mib,
        selector=tuple(sorted(work.placement.selector.items())),
        regions=regions,
    )


@dataclass(frozen=True, slots=True)
class Waiting:
    """A queued job: `gpu_seconds` is what admission reserves against its project's budget."""

    job_id: int
    project: str
    priority: int
    submitted_at: float
    demand: Demand
    gpu_seconds: float
    hosts: frozenset[str] | None = None  # the hosts its project may use (policy); None: all


@dataclass(frozen=True, slots=True)
class Running:
    """An attempt holding GPUs now, which a higher-priority job may preempt if allowed."""

    job_id: int
    project: str
    priority: int
    preemptible: bool
    host: str
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Allowance:
    """What a project may still take: GPUs under its quota and GPU-seconds left in its budget
    (None: no limit)."""

    gpus: int | None = None
    gpu_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Placed:
    job_id: int
    host: str
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Preempt:
    victim: int  # job id of the running attempt to stop
    for_job: int
    reason: str


@dataclass
class Decisions:
    placed: list[Placed] = field(default_factory=list)
    waiting: dict[int, str] = field(default_factory=dict)  # job id -> why it still waits
    preempt: list[Preempt] = field(default_factory=list)


def order(jobs: Sequence[Waiting]) -> list[Waiting]:
    """Priority first (higher earlier), then age (older earlier), then id."""
    return sorted(jobs, key=lambda j: (-j.priority, j.submitted_at, j.job_id))


def schedule(
    jobs: Sequence[Waiting],
    hosts: Sequence[HostView],
    allowances: Mapping[str, Allowance],
    running: Sequence[Running] = (),
) -> Decisions:
    """One pass over the queue: each job in order takes the tightest-fitting host, within its
    project's quota and budget; the others wait with the reason."""
    decisions = Decisions()
    left = dict(allowances)
    fleet = {host.name: host for host in hosts}  # what this pass has left free on each
    for job in order(jobs):
        allowance = left.get(job.project, Allowance())
        over = _over(job, allowance)
        if over:
            decisions.waiting[job.job_id] = over
            continue
        best: Candidate | None = None
        for host in fleet.values():
            if job.hosts is not None and host.name not in job.hosts:
                continue
            fit = screen(host, job.demand)
            fits = isinstance(fit, Candidate) and fit.fits(job.demand)
            if fits and (best is None or fit.score < best.score):  # type: ignore[union-attr]
                best = fit  # type: ignore[assignment]
        if best is None:
            decisions.waiting[job.job_id] = f"no host has {job.demand.describe()} free"
            continue
        gpus = best.take(job.demand)
        host = best.host
        fleet[host.name] = replace(
            host,
            allocated_gpus=host.allocated_gpus | frozenset(gpus),
            free_cpu=host.free_cpu - job.demand.cpu,
            free_memory_mib=host.free_memory_mib - job.demand.memory_mib,
        )
        decisions.placed.append(Placed(job.job_id, host.name, gpus))
        left[job.project] = Allowance(
            None if allowance.gpus is None else allowance.gpus - job.demand.gpus,
            None if allowance.gpu_seconds is None else allowance.gpu_seconds - job.gpu_seconds,
        )
    return decisions


def _over(job: Waiting, allowance: Allowance) -> str | None:
    if allowance.gpus is not None and job.demand.gpus > allowance.gpus:
        return f"project {job.project} GPU quota: {max(0, allowance.gpus)} GPU(s) left"
    if allowance.gpu_seconds is not None and job.gpu_seconds > allowance.gpu_seconds:
        hours = max(0.0, allowance.gpu_seconds) / 3600
        need = job.gpu_seconds / 3600
        return f"project {job.project} GPU-hour budget: {hours:.1f} left, needs {need:.1f}"
    return None
