"""What one scheduling pass has left free on each host, indexed so that each job finds its
tightest host without rescanning the fleet, and why a job finds none.

Hosts are screened once per *kind* of demand (GPU product and memory, selector, residency and
the project's allowed hosts): the static part of eligibility. The eligible hosts sit in buckets
by free GPU count, so a job asking for N GPUs looks at the buckets from N up and takes the
first host that fits: the tightest, which keeps big hosts whole for big jobs. A claim moves the
host down a bucket in every index that holds it. A host whose GPU acceptance failed has no GPU
of any kind for a job (placement's gpu_acceptance_refusal rule): CPU-only jobs still run there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from aiorch.deploy.eligibility import EPSILON, Demand, Exclusion, Stage, mib, screen
from aiorch.deploy.explain import _listed  # one way of naming a few hosts and counting the rest
from aiorch.deploy.hosts import Gpu, HostView

# A demand without its amounts: GPU product, GPU memory, selector, regions, allowed hosts.
Kind = tuple[
    str | None,
    int | None,
    tuple[tuple[str, str], ...],
    frozenset[str] | None,
    frozenset[str] | None,
]


@dataclass(slots=True)
class HostState:
    """One host as the pass has left it: free GPU indices (unallocated and not claimed yet)."""

    view: HostView
    free: set[int]
    cpu: float
    memory_mib: int


@dataclass(slots=True)
class Eligible:
    """The hosts a kind of demand may use, with the indices of their GPUs of that kind."""

    matching: dict[str, frozenset[int]] = field(default_factory=dict)
    buckets: list[dict[str, None]] = field(default_factory=list)  # by free GPUs, ordered sets
    excluded: list[Exclusion] = field(default_factory=list)  # region, selector or health
    outside_policy: int = 0


def kind_of(demand: Demand, allowed: frozenset[str] | None) -> Kind:
    d = demand
    return d.gpu_product, d.min_gpu_memory_mib, d.selector, d.regions, allowed


class Capacity:
    """The pass's ledger: every claim (a placement, or GPUs held for a preempting job) goes
    through `take`, so no GPU is handed out twice."""

    def __init__(self, hosts: Sequence[HostView]) -> None:
        self.hosts: dict[str, HostState] = {}
        for host in sorted(hosts, key=lambda h: h.name):
            if host.name in self.hosts:
                raise ValueError(f"host {host.name} is listed twice")
            unallocated = {gpu.index for gpu in host.gpus} - host.allocated_gpus
            self.hosts[host.name] = HostState(
                host, unallocated, host.free_cpu, host.free_memory_mib
            )
        self._widest = max((len(h.gpus) for h in hosts), default=0)
        self._kinds: dict[Kind, Eligible] = {}
        self._member_of: dict[str, list[Eligible]] = {name: [] for name in self.hosts}
        # Hosts share GPU models and kinds share residency and selectors: screen each once.
        models: dict[tuple[Gpu, ...], int] = {}
        self._model = {
            n: models.setdefault(s.view.gpus, len(models)) for n, s in self.hosts.items()
        }
        self._where: dict[Demand, tuple[list[str], list[Exclusion]]] = {}
        self._what: dict[tuple[int, str | None, int | None], frozenset[int]] = {}

    def eligible(self, kind: Kind) -> Eligible:
        found = self._kinds.get(kind)
        if found is None:
            found = self._kinds[kind] = self._screen(kind)
        return found

    def _screen(self, kind: Kind) -> Eligible:
        product, memory, selector, regions, allowed = kind
        probe = Demand(
            gpu_product=product, min_gpu_memory_mib=memory, selector=selector, regions=regions
        )
        wants_kind = product is not None or memory is not None
        passing, excluded = self._verdicts(Demand(selector=selector, regions=regions))
        out = Eligible(buckets=[{} for _ in range(self._widest + 1)], excluded=excluded)
        if allowed is not None:
            passing = [name for name in passing if name in allowed]
            out.excluded = [e for e in excluded if e.host in allowed]
            out.outside_policy = sum(1 for name in self.hosts if name not in allowed)
        for name in passing:
            state = self.hosts[name]
            refused = state.view.gpu_acceptance_failed is not None
            matching = out.matching[name] = frozenset() if refused else self._matching(state, probe)
            if matching or not wants_kind:
                out.buckets[len(state.free)][name] = None
                self._member_of[name].append(out)
        return out

    def _verdicts(self, where: Demand) -> tuple[list[str], list[Exclusion]]:
        """The hosts that pass one placement's region, selector and health stages, and the
        others with why."""
        found = self._where.get(where)
        if found is None:
            passing, excluded = [], []
            for name, state in self.hosts.items():
                verdict = screen(state.view, where)
                if isinstance(verdict, Exclusion):
                    excluded.append(verdict)
                else:
                    passing.append(name)
            found = self._where[where] = passing, excluded
        return found

    def _matching(self, state: HostState, probe: Demand) -> frozenset[int]:
        """The indices of the host's GPUs of the kind asked, worked out once per GPU model."""
        key = (self._model[state.view.name], probe.gpu_product, probe.min_gpu_memory_mib)
        found = self._what.get(key)
        if found is None:
            gpus = state.view.gpus
            found = self._what[key] = frozenset(g.index for g in gpus if probe.gpu_fits(g))
        return found

    def find(self, index: Eligible, demand: Demand) -> HostState | None:
        """The tightest host of `index` with all of `demand` free now, or None."""
        for bucket in index.buckets[demand.gpus :]:
            for name in bucket:
                state = self.hosts[name]
                if fits(state, index.matching[name], demand):
                    return state
        return None

    def take(self, state: HostState, gpus: Sequence[int], cpu: float, memory_mib: int) -> None:
        before = len(state.free)
        state.free.difference_update(gpus)
        state.cpu -= cpu
        state.memory_mib -= memory_mib
        after = len(state.free)
        if after != before:
            name = state.view.name
            for index in self._member_of[name]:
                del index.buckets[before][name]
                index.buckets[after][name] = None

    def why_not(self, index: Eligible, demand: Demand, project: str) -> str:
        """Why no host of `index` has `demand` free now, stage by stage, busiest reason first."""
        if not self.hosts:
            return "the inventory has no hosts"
        kind, want = demand.gpu_kind(), demand.gpus
        busy, short, fewer, refused, without = [], [], [], [], 0
        most_free, most = 0, 0
        for name, matching in index.matching.items():
            state = self.hosts[name]
            if want and state.view.gpu_acceptance_failed is not None:
                refused.append(state.view.gpu_acceptance_failed)
            elif want and len(matching) == 0:
                without += 1
            elif len(matching) < want:
                fewer.append((name, len(matching)))
                most = max(most, len(matching))
            elif len(free := state.free & matching) < want:
                busy.append(name)
                most_free = max(most_free, len(free))
            else:
                short.append(state)
        parts = []
        if busy:
            parts.append(f"{_hosts(len(busy))} busy (at most {most_free} x {kind} free on one)")
        if short:
            cpu = max(s.cpu for s in short)
            memory = mib(max(0, max(s.memory_mib for s in short)))
            parts.append(
                f"{_hosts(len(short))} with the GPUs free but short of CPU or memory "
                f"(at most {max(0.0, cpu):g} CPU, {memory} memory free on one)"
            )
        if fewer:
            names = _listed([n for n, count in fewer if count == most])
            parts.append(f"{_hosts(len(fewer))} with fewer than {want} x {kind} ({most}: {names})")
        if without:
            parts.append(f"{_hosts(without)} without {kind}")
        if refused:
            parts.append(f"{_hosts(len(refused))} excluded: {_listed(refused)}")
        unwell = [e for e in index.excluded if e.stage is Stage.HEALTH]
        if unwell:
            listed = _listed([f"{e.host} {e.reason}" for e in unwell])
            parts.append(f"{_hosts(len(unwell))} excluded: {listed}")
        for stage, why in (
            (Stage.SELECTOR, f"not matching selector {demand.selector_text()}"),
            (Stage.REGION, f"outside residency {demand.regions_text()}"),
        ):
            count = sum(1 for e in index.excluded if e.stage is stage)
            if count:
                parts.append(f"{_hosts(count)} {why}")
        if index.outside_policy:
            parts.append(f"{_hosts(index.outside_policy)} outside those project {project} may use")
        return f"no host has {demand.describe()} free: " + "; ".join(parts)


def fits(state: HostState, matching: frozenset[int], demand: Demand) -> bool:
    return (
        (not demand.gpus or len(state.free & matching) >= demand.gpus)
        and state.cpu + EPSILON >= demand.cpu
        and state.memory_mib >= demand.memory_mib
    )


def lowest_free(state: HostState, matching: frozenset[int], n: int) -> tuple[int, ...]:
    return tuple(sorted(state.free & matching)[:n])


def _hosts(n: int) -> str:
    return f"{n} host" if n == 1 else f"{n} hosts"
