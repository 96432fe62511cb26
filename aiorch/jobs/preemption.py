"""Preemption: which running attempts to stop so that a job that fits nowhere can run.

Only for a job that fits on no host as the fleet stands. On one host, GPUs that are free now,
then GPUs of attempts already told to stop (they come free without stopping anyone else), then
GPUs of running preemptible attempts of strictly lower priority count as free, for this
decision only. The host chosen needs the fewest new victims, then the lowest-priority ones, then
the fewest stopping attempts to wait for, then the tightest fit. The job itself stays waiting
until the victims have let their GPUs go (a later pass places it); meanwhile it holds that
host's free GPUs, so no lower-priority job takes them, and no victim is chosen twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING

from aiorch.deploy.eligibility import EPSILON
from aiorch.jobs import states
from aiorch.jobs.capacity import Capacity, HostState, Kind, lowest_free

if TYPE_CHECKING:
    from aiorch.jobs.queue import Running, Waiting


@dataclass(frozen=True, slots=True)
class Option:
    host: HostState
    victims: tuple[Running, ...]  # to be told to stop now
    stopping: tuple[Running, ...]  # already stopping, waited for
    key: tuple[int, int, int, int, int]


class Holders:
    """The attempts on each host that could give up GPUs: victims-to-be and those stopping."""

    def __init__(self, running: Sequence[Running], capacity: Capacity) -> None:
        self._victims: dict[str, list[Running]] = defaultdict(list)
        self._stopping: dict[str, list[Running]] = defaultdict(list)
        for attempt in running:
            if attempt.host not in capacity.hosts or not attempt.gpus:
                continue
            if attempt.stopping:
                self._stopping[attempt.host].append(attempt)
            elif attempt.preemptible and attempt.state == states.RUNNING:
                self._victims[attempt.host].append(attempt)
        self._hosts = sorted(set(self._victims) | set(self._stopping))
        self._releasable = {  # an upper bound on what stopping attempts would free
            name: sum(len(a.gpus) for a in (*self._victims[name], *self._stopping[name]))
            for name in self._hosts
        }
        self._by_kind: dict[Kind, list[str]] = {}

    def find(self, job: Waiting, kind: Kind, capacity: Capacity) -> Option | None:
        """The best host on which stopping attempts (already stopping, then new victims) would
        make room for `job`, or None."""
        demand = job.demand
        if not demand.gpus:
            return None
        index = capacity.eligible(kind)
        hosts = self._by_kind.get(kind)
        if hosts is None:  # the hosts with attempts on them that this kind may use
            hosts = self._by_kind[kind] = [n for n in self._hosts if index.matching.get(n)]
        best: Option | None = None
        for name in hosts:
            matching = index.matching[name]
            if len(matching) < demand.gpus:
                continue
            state = capacity.hosts[name]
            if len(state.free) + self._releasable[name] < demand.gpus:
                continue  # cannot make room whatever it stops
            option = self._on_host(job, state, matching)
            if option is not None and (best is None or option.key < best.key):
                best = option
        return best

    def _on_host(self, job: Waiting, state: HostState, matching: frozenset[int]) -> Option | None:
        name, demand = state.view.name, job.demand
        need = demand.gpus - len(state.free & matching)
        stopping = _largest_first(self._stopping.get(name, ()), matching)
        waited: list[Running] = []
        for attempt in stopping:
            if need <= 0:
                break
            waited.append(attempt)
            need -= _held(attempt, matching)
        victims: tuple[Running, ...] = ()
        if need > 0:
            lower = [
                a
                for a in self._victims.get(name, ())
                if a.priority < job.priority and _held(a, matching)
            ]
            chosen = _fewest_lowest(lower, matching, need)
            if chosen is None:
                return None
            victims = chosen
        freed = (*waited, *victims)
        cpu = state.cpu + sum(a.cpu for a in freed)
        memory = state.memory_mib + sum(a.memory_mib for a in freed)
        if cpu + EPSILON < demand.cpu or memory < demand.memory_mib:
            return None
        top = max((a.priority for a in victims), default=-1)
        spare = len(state.free) + sum(len(a.gpus) for a in freed) - demand.gpus
        key = (len(victims), top, sum(a.priority for a in victims), len(waited), spare)
        return Option(state, victims, tuple(waited), key)

    def claim(self, option: Option, job: Waiting, kind: Kind, capacity: Capacity) -> None:
        """The victims and waited-for attempts are spoken for, and the host's free share of
        what `job` needs is held for it, for the rest of this pass."""
        state, name = option.host, option.host.view.name
        for attempt in option.victims:
            self._victims[name].remove(attempt)
        for attempt in option.stopping:
            self._stopping[name].remove(attempt)
        self._releasable[name] -= sum(len(a.gpus) for a in (*option.victims, *option.stopping))
        held = lowest_free(state, capacity.eligible(kind).matching[name], job.demand.gpus)
        cpu = min(job.demand.cpu, max(0.0, state.cpu))
        memory = min(job.demand.memory_mib, max(0, state.memory_mib))
        capacity.take(state, held, cpu, memory)


def _held(attempt: Running, matching: frozenset[int]) -> int:
    """How many GPUs of the kind asked `attempt` holds."""
    return len(matching.intersection(attempt.gpus))


def _largest_first(attempts: Sequence[Running], matching: frozenset[int]) -> list[Running]:
    useful = [a for a in attempts if _held(a, matching)]
    return sorted(useful, key=lambda a: (-_held(a, matching), a.job_id))


def _fewest_lowest(
    attempts: Sequence[Running], matching: frozenset[int], need: int
) -> tuple[Running, ...] | None:
    """The fewest attempts that hold `need` GPUs of the kind; among as few, the first set in
    lowest-priority order. The fewest is what the largest holders reach first."""
    sizes = sorted((_held(a, matching) for a in attempts), reverse=True)
    total, fewest = 0, 0
    for size in sizes:
        if total >= need:
            break
        total, fewest = total + size, fewest + 1
    if total < need:
        return None
    ranked = sorted(attempts, key=lambda a: (a.priority, -_held(a, matching), a.job_id))
    sets = combinations(ranked, fewest)  # the largest `fewest` holders are among them
    return next(c for c in sets if sum(_held(a, matching) for a in c) >= need)
