"""The job queue's scheduling pass: which waiting jobs start now, on which host and GPUs, and
why the others wait.

Pure, like placement: the hub passes the waiting jobs, the fleet as `HostView`s (whose
`allocated_gpus` already count what deployments and running jobs hold: one ledger), what each
project may still use, and the attempts running now; `schedule` returns decisions. Jobs go by
priority (higher first), then age; a job that does not fit is passed over, never blocking the
smaller jobs behind it. Each takes the tightest host that fits (capacity.py keeps the fleet
indexed by free GPUs); one that fits nowhere may preempt lower-priority jobs (preemption.py).
Multi-node jobs are admitted here (quota, budget) but placed by the cluster backend (Slurm).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiorch.deploy.eligibility import Demand
from aiorch.deploy.hosts import HostView
from aiorch.jobs import states
from aiorch.jobs.capacity import Capacity, kind_of, lowest_free
from aiorch.jobs.preemption import Holders
from aiorch.jobs.spec import JobSpec


def job_demand(job: JobSpec, regions: frozenset[str] | None = None) -> Demand:
    """What one node of `job` needs, in placement's terms (a job publishes no ports)."""
    return Demand.of_parts(job.spec.resources, job.spec.placement, regions=regions)


@dataclass(frozen=True, slots=True)
class Waiting:
    """A queued job: `demand` is one node's share, `gpu_seconds` what admission reserves
    against its project's budget (all nodes)."""

    job_id: int
    project: str
    priority: int
    submitted_at: float
    demand: Demand
    gpu_seconds: float
    hosts: frozenset[str] | None = None  # the hosts its project may use (policy); None: all
    nodes: int = 1  # > 1: admitted here, placed by the cluster backend (Decisions.to_cluster)
    cluster: bool = False  # aimed at a cluster (spec.cluster): the same, whatever `nodes`

    @property
    def total_gpus(self) -> int:
        return self.demand.gpus * self.nodes


@dataclass(frozen=True, slots=True)
class Running:
    """An attempt holding GPUs now (scheduled, starting or running). A higher-priority job may
    preempt it when it is `running`, preemptible and not `stopping` already (its attempt has a
    stop, preempt or cancel, pending: its GPUs come free soon, and a job that needs them waits
    for them instead of preempting more). `cpu` and `memory_mib` are what stopping it frees."""

    job_id: int
    project: str
    priority: int
    preemptible: bool
    host: str
    gpus: tuple[int, ...]
    state: str = states.RUNNING
    stopping: bool = False
    cpu: float = 0.0
    memory_mib: int = 0


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
    to_cluster: list[int] = field(default_factory=list)  # multi-node jobs within quota, budget


def order(jobs: Sequence[Waiting]) -> list[Waiting]:
    """Priority first (higher earlier), then age (older earlier), then id."""
    return sorted(jobs, key=lambda j: (-j.priority, j.submitted_at, j.job_id))


def schedule(
    jobs: Sequence[Waiting],
    hosts: Sequence[HostView],
    allowances: Mapping[str, Allowance],
    running: Sequence[Running] = (),
) -> Decisions:
    """One pass over the queue: each job in order, within its project's quota and budget,
    takes the tightest host that fits, or else preempts lower-priority jobs on one host, or
    else waits with the reason. A job placed, sent to the cluster or waiting on preemption
    counts against its project's allowance for the rest of the pass."""
    decisions = Decisions()
    left = dict(allowances)
    capacity = Capacity(hosts)
    holders = Holders(running, capacity)
    no_fit: dict[tuple[object, ...], str] = {}  # resources only shrink during a pass
    no_room_made: set[tuple[object, ...]] = set()  # ... and later jobs have lower priority
    for job in order(jobs):
        allowance = left.get(job.project, Allowance())
        over = _over(job, allowance)
        if over:
            decisions.waiting[job.job_id] = over
            continue
        left[job.project] = _less(allowance, job)
        if job.nodes > 1 or job.cluster:
            decisions.to_cluster.append(job.job_id)
            continue
        demand, kind = job.demand, kind_of(job.demand, job.hosts)
        index = capacity.eligible(kind)
        shape = (kind, demand.gpus, demand.cpu, demand.memory_mib)
        spot = None if shape in no_fit else capacity.find(index, demand)
        if spot is not None:
            gpus = lowest_free(spot, index.matching[spot.view.name], demand.gpus)
            capacity.take(spot, gpus, demand.cpu, demand.memory_mib)
            decisions.placed.append(Placed(job.job_id, spot.view.name, gpus))
            continue
        if shape not in no_fit:
            no_fit[shape] = capacity.why_not(index, demand, job.project)
        option = None if shape in no_room_made else holders.find(job, kind, capacity)
        if option is None:
            no_room_made.add(shape)
            decisions.waiting[job.job_id] = no_fit[shape]
            left[job.project] = allowance
            continue
        holders.claim(option, job, kind, capacity)
        host = option.host.view.name
        for victim in option.victims:
            why = (
                f"preempted for job {job.job_id} (priority {job.priority} over "
                f"{victim.priority}), which needs {demand.describe()} on {host}"
            )
            decisions.preempt.append(Preempt(victim.job_id, job.job_id, why))
        count = len(option.victims) + len(option.stopping)
        decisions.waiting[job.job_id] = f"waiting for {count} preempted job(s) to stop on {host}"
    return decisions


def _over(job: Waiting, allowance: Allowance) -> str | None:
    """Which limit `job` would pass, and by how much."""
    gpus = job.total_gpus
    if allowance.gpus is not None and gpus > allowance.gpus:
        have = max(0, allowance.gpus)
        return (
            f"project {job.project} GPU quota: {have} GPU(s) left, needs {gpus} "
            f"({gpus - have} over)"
        )
    if allowance.gpu_seconds is not None and job.gpu_seconds > allowance.gpu_seconds:
        have_s = max(0.0, allowance.gpu_seconds)
        return (
            f"project {job.project} GPU-hour budget: {_hours(have_s)} left, needs "
            f"{_hours(job.gpu_seconds)} ({_hours(job.gpu_seconds - have_s)} over)"
        )
    return None


def _less(allowance: Allowance, job: Waiting) -> Allowance:
    gpus, seconds = allowance.gpus, allowance.gpu_seconds
    return Allowance(
        None if gpus is None else gpus - job.total_gpus,
        None if seconds is None else seconds - job.gpu_seconds,
    )


def _hours(seconds: float) -> str:
    """GPU-seconds as GPU-hours, to two decimals where that matters: `12.5`, `0.25`, `3`."""
    return f"{round(seconds / 3600, 2):g}"
