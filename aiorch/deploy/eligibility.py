"""Which hosts can take a replica, and why the others cannot.

A host passes five stages in order (region, selector, health, GPU acceptance, hardware) or is
excluded at the first it fails, with the reason; a host that passes becomes a `Candidate`, the
mutable free capacity placement draws from.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from aiorch.deploy.hosts import Gpu, HostView, Replica
from aiorch.deploy.spec import DeploymentSpec, PlacementSpec, Resources
from edge_agent.contract.workload import published_port

EPSILON = 1e-9  # CPU counts are floats; 0.1 + 0.2 must still fit in 0.3


class Stage(IntEnum):
    REGION = 0
    SELECTOR = 1
    HEALTH = 2
    ACCEPTANCE = 3
    HARDWARE = 4


@dataclass(frozen=True, slots=True)
class Exclusion:
    host: str
    stage: Stage
    reason: str
    matching_gpus: int = 0  # at Stage.HARDWARE: how many of its GPUs are of the kind asked

    def __str__(self) -> str:
        return f"host {self.host} excluded: {self.reason}"


@dataclass(frozen=True, slots=True)
class Demand:
    """What one replica needs and where it may run: the spec's resources and placement, with
    residency narrowed by policy when the hub passes `regions`."""

    gpus: int = 0
    gpu_product: str | None = None
    min_gpu_memory_mib: int | None = None
    cpu: float = 0.0
    memory_mib: int = 0
    # Every port a replica publishes (whatever its protocol, to stay on the safe side).
    host_ports: frozenset[int] = frozenset()
    selector: tuple[tuple[str, str], ...] = ()
    regions: frozenset[str] | None = None

    @classmethod
    def of(cls, spec: DeploymentSpec, regions: frozenset[str] | None = None) -> Demand:
        work = spec.spec
        ports = frozenset(published_port(p.container_port, p.host_port) for p in work.ports)
        return cls.of_parts(work.resources, work.placement, ports, regions)

    @classmethod
    def of_parts(
        cls,
        res: Resources,
        placement: PlacementSpec,
        host_ports: frozenset[int] = frozenset(),
        regions: frozenset[str] | None = None,
    ) -> Demand:
        """From a spec's resources and placement (a deployment's or a job's)."""
        if placement.residency is not None:
            asked = frozenset(placement.residency.region)
            regions = asked if regions is None else asked & regions
        return cls(
            gpus=res.gpus,
            gpu_product=res.gpu_product,
            min_gpu_memory_mib=res.min_gpu_memory_mib,
            cpu=res.cpu,
            memory_mib=res.memory_mib,
            host_ports=host_ports,
            selector=tuple(sorted(placement.selector.items())),
            regions=regions,
        )

    def gpu_fits(self, gpu: Gpu) -> bool:
        product = self.gpu_product
        if product is not None and product.casefold() not in gpu.product.casefold():
            return False
        return self.min_gpu_memory_mib is None or gpu.memory_mib >= self.min_gpu_memory_mib

    def gpu_kind(self) -> str:
        """`H100 (>= 80 GiB)`, `GPU (>= 40 GiB)` or `GPU`."""
        kind = self.gpu_product or "GPU"
        if self.min_gpu_memory_mib:
            kind += f" (>= {mib(self.min_gpu_memory_mib)})"
        return kind

    def describe(self) -> str:
        """`2 x H100 (>= 80 GiB), 8 CPU, 64 GiB memory, hostPort 8000`."""
        parts = [f"{self.gpus} x {self.gpu_kind()}"] if self.gpus else []
        if self.cpu:
            parts.append(f"{self.cpu:g} CPU")
        if self.memory_mib:
            parts.append(f"{mib(self.memory_mib)} memory")
        parts += [f"hostPort {port}" for port in sorted(self.host_ports)]
        return ", ".join(parts) or "nothing"

    def selector_text(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in self.selector)

    def regions_text(self) -> str:
        return ", ".join(sorted(self.regions or ())) or "(none allowed)"


@dataclass(slots=True)
class Candidate:
    """A host that may take replicas, with what is still free on it as the plan fills it."""

    host: HostView
    free_gpus: list[int]  # unallocated and matching the demand, ascending
    other_free_gpus: int  # unallocated but not matching: only for the score
    cpu: float
    memory_mib: int
    ports: set[int] = field(default_factory=set)
    replicas: int = 0  # of this deployment

    @property
    def score(self) -> int:
        """Free GPUs left: lower is a tighter fit, which keeps big hosts whole for big jobs."""
        return len(self.free_gpus) + self.other_free_gpus

    def fits(self, demand: Demand) -> bool:
        return (
            len(self.free_gpus) >= demand.gpus
            and self.cpu + EPSILON >= demand.cpu
            and self.memory_mib >= demand.memory_mib
            and self.ports.isdisjoint(demand.host_ports)
        )

    def take(self, demand: Demand, gpus: Iterable[int] | None = None) -> tuple[int, ...]:
        """Claim one replica's share (the lowest free GPUs unless `gpus` names them)."""
        chosen = tuple(self.free_gpus[: demand.gpus] if gpus is None else gpus)
        for index in chosen:
            self.free_gpus.remove(index)
        self.cpu -= demand.cpu
        self.memory_mib -= demand.memory_mib
        self.ports |= demand.host_ports
        self.replicas += 1
        return chosen

    def why_not_keep(self, replica: Replica, demand: Demand) -> str | None:
        """Why `replica` cannot stay as it is on this host, or None when it can."""
        name = self.host.name
        if len(replica.gpus) != demand.gpus:
            return f"it holds {len(replica.gpus)} GPU(s) and the spec now asks for {demand.gpus}"
        by_index = {gpu.index: gpu for gpu in self.host.gpus}
        for index in replica.gpus:
            gpu = by_index.get(index)
            if gpu is None:
                return f"GPU {index} is no longer on {name}"
            if index in self.host.allocated_gpus:
                return f"GPU {index} on {name} is allocated to another workload"
            if not demand.gpu_fits(gpu):
                what = f"{gpu.product} ({mib(gpu.memory_mib)})"
                return f"GPU {index} on {name} is a {what}, not {demand.gpu_kind()}"
            if index not in self.free_gpus or replica.gpus.count(index) > 1:
                return f"GPU {index} on {name} is also held by another replica"
        if self.cpu + EPSILON < demand.cpu:
            return f"{name} has {self.cpu:g} CPU free, it needs {demand.cpu:g}"
        if self.memory_mib < demand.memory_mib:
            return (
                f"{name} has {mib(self.memory_mib)} memory free, it needs {mib(demand.memory_mib)}"
            )
        taken = sorted(self.ports & demand.host_ports)
        if taken:
            return f"hostPort {taken[0]} on {name} is in use"
        return None


def screen(host: HostView, demand: Demand) -> Candidate | Exclusion:
    """The host as a candidate for `demand`, or the first stage it fails and why."""
    if demand.regions is not None and host.region not in demand.regions:
        region = host.region or "unset"
        reason = f"region {region} is outside residency {demand.regions_text()}"
        return Exclusion(host.name, Stage.REGION, reason)
    for key, wanted in demand.selector:
        actual = host.label(key)
        if actual != wanted:
            has = f"{key} is {actual}" if actual is not None else f"no {key} label"
            reason = f"does not match selector {key}={wanted} ({has})"
            return Exclusion(host.name, Stage.SELECTOR, reason)
    health = [
        word
        for bad, word in (
            (not host.online, "offline"),
            (not host.ready, "not ready"),
            (host.drifted, "drifted"),
        )
        if bad
    ]
    if health:
        return Exclusion(host.name, Stage.HEALTH, ", ".join(health))
    if (refused := gpu_acceptance_refusal(host, demand)) is not None:
        return Exclusion(host.name, Stage.ACCEPTANCE, refused)
    matching = [gpu for gpu in host.gpus if demand.gpu_fits(gpu)]
    if len(matching) < demand.gpus:
        reason = f"has {len(matching)} x {demand.gpu_kind()}, needs {demand.gpus}"
        return Exclusion(host.name, Stage.HARDWARE, reason, len(matching))
    allocated = host.allocated_gpus
    free = (
        sorted(gpu.index for gpu in matching if gpu.index not in allocated) if demand.gpus else []
    )
    unallocated = sum(1 for gpu in host.gpus if gpu.index not in allocated)
    return Candidate(
        host=host,
        free_gpus=free,
        other_free_gpus=unallocated - len(free),
        cpu=host.free_cpu,
        memory_mib=host.free_memory_mib,
        ports=set(host.used_host_ports),
    )


def gpu_acceptance_refusal(host: HostView, demand: Demand) -> str | None:
    """Only accepted hosts take GPU work (issue 15 part 4): a host whose latest GPU acceptance
    record failed is no candidate for anything that asks for GPUs (CPU-only work still runs
    there). A host with no record keeps taking work: the gate applies to the hosts that went
    through gpu_acceptance.yml, and the hosts that never did (the lab's, a fleet from before
    the gate) must not all stop at once."""
    if demand.gpus and host.gpu_acceptance_failed is not None:
        return host.gpu_acceptance_failed
    return None


def mib(value: int) -> str:
    """`80 GiB`, `78.1 GiB` or `512 MiB`."""
    if value < 1024:
        return f"{value} MiB"
    return f"{value / 1024:.1f}".removesuffix(".0") + " GiB"
