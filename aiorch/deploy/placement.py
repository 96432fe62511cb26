"""Placement: where each replica of a deployment runs, decided from a snapshot of the fleet.

Pure and deterministic: the same hosts, replicas and spec give the same plan, whatever their
order. Replicas that still fit stay where they are (a re-plan of an applied plan changes
nothing); the others move, new ones are placed, extra ones removed, and any that find no host
are listed with the reason (answers summarise them: a count per reason). Hosts are screened
once, then drawn from heaps keyed by (replicas already there, free GPUs left, name), so a plan
costs O((hosts + replicas) log hosts).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, replace

from aiorch.deploy.eligibility import Candidate, Demand, Exclusion, Stage, screen
from aiorch.deploy.explain import Funnel, unplaced_reason
from aiorch.deploy.hosts import HostView, Replica
from aiorch.deploy.spec import DeploymentSpec


@dataclass(frozen=True, slots=True)
class Move:
    replica: Replica
    previous: Replica
    reason: str


@dataclass(frozen=True, slots=True)
class Removal:
    replica: Replica
    reason: str


@dataclass(frozen=True, slots=True)
class Unplaced:
    ordinal: int
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    kept: tuple[Replica, ...] = ()
    placed: tuple[Replica, ...] = ()
    moved: tuple[Move, ...] = ()
    removed: tuple[Removal, ...] = ()
    unplaced: tuple[Unplaced, ...] = ()
    excluded: tuple[Exclusion, ...] = ()  # in scope but unhealthy, not GPU-accepted, too few GPUs

    @property
    def replicas(self) -> tuple[Replica, ...]:
        """Every replica that has a host after this plan, by ordinal: what the hub stores."""
        placed = [*self.kept, *self.placed, *(m.replica for m in self.moved)]
        return tuple(sorted(placed, key=lambda r: r.ordinal))

    @property
    def changed(self) -> bool:
        return bool(self.placed or self.moved or self.removed)

    @property
    def unplaced_summary(self) -> list[dict[str, int | str]]:
        """Unplaced replicas as `{count, reason}`, one entry per reason: an answer stays
        small however many replicas found no host."""
        counts = Counter(u.reason for u in self.unplaced)
        return [{"count": n, "reason": reason} for reason, n in sorted(counts.items())]


def plan_placement(
    spec: DeploymentSpec,
    hosts: Sequence[HostView],
    current: Sequence[Replica] = (),
    *,
    regions: frozenset[str] | None = None,
) -> Plan:
    """Plan `spec`'s replicas over `hosts`, starting from the `current` ones.

    `regions`, when given, narrows the spec's residency further (a project's residency policy);
    hosts outside it are never chosen.
    """
    demand = Demand.of(spec, regions)
    spread = spec.spec.placement.spread
    candidates, unwell, exclusions, funnel = _screen_all(hosts, demand)
    kept, held, displaced = _keep(current, candidates, unwell, exclusions, demand)
    kept, to_move, fresh, removed = _resize(
        kept, held, displaced, spec.spec.replicas, spread, candidates
    )

    chooser = _chooser(spread, candidates.values(), demand)
    moved: list[Move] = []
    placed: list[Replica] = []
    lost: list[int] = []
    for previous, why in to_move:
        spot = chooser.place(demand)
        if spot is None:
            lost.append(previous.ordinal)
            removed.append(Removal(previous, f"{why}; nowhere else to go"))
        else:
            moved.append(Move(Replica(previous.ordinal, *spot), previous, why))
    for ordinal in fresh:
        spot = chooser.place(demand)
        if spot is None:
            lost.append(ordinal)
        else:
            placed.append(Replica(ordinal, *spot))
    reason = unplaced_reason(demand, funnel, list(candidates.values())) if lost else ""
    return Plan(
        kept=tuple(kept),
        placed=tuple(placed),
        moved=tuple(moved),
        removed=tuple(sorted(removed, key=lambda r: r.replica.ordinal)),
        unplaced=tuple(Unplaced(ordinal, reason) for ordinal in sorted(lost)),
        excluded=tuple(funnel.notable),
    )


def _resize(
    kept: list[Replica],
    held: list[tuple[Replica, str]],
    displaced: list[tuple[Replica, str]],
    want: int,
    spread: str,
    candidates: dict[str, Candidate],
) -> tuple[list[Replica], list[tuple[Replica, str]], list[int], list[Removal]]:
    """Match the replica count to `want`: when there are too many, displaced replicas go
    first, then those held on unhealthy hosts, then kept ones as `_scale_down` picks; when too
    few, displaced ones move before new ones (with fresh ordinals) are added. Returns kept
    (held included), to move, new ordinals and removals."""
    removed: list[Removal] = []
    surplus = len(kept) + len(held) - want
    if surplus > 0 and held:
        by_last = sorted(held, key=lambda pair: -pair[0].ordinal)
        dropped, held = by_last[:surplus], by_last[surplus:]
        removed += [Removal(r, f"{why}; scaled down to {want} replicas") for r, why in dropped]
        surplus -= len(dropped)
    if surplus > 0:
        stop = _scale_down(kept, surplus, spread, candidates)
        removed += [
            Removal(r, f"scaled down to {want} replicas") for r in kept if r.ordinal in stop
        ]
        kept = [r for r in kept if r.ordinal not in stop]
    kept = sorted([*kept, *(r for r, _ in held)], key=lambda r: r.ordinal)
    need = want - len(kept)
    removed += [Removal(r, f"{why}; scaled down to {want} replicas") for r, why in displaced[need:]]
    to_move = displaced[:need]
    used = {r.ordinal for r in kept} | {r.ordinal for r, _ in displaced}
    return kept, to_move, _free_ordinals(used, need - len(to_move)), removed


def _screen_all(
    hosts: Sequence[HostView], demand: Demand
) -> tuple[dict[str, Candidate], dict[str, Candidate], dict[str, Exclusion], Funnel]:
    """Candidates for new replicas; `unwell` hosts (offline, not ready, drifted) that would
    otherwise be candidates: they take no new replicas but keep the ones they have."""
    candidates: dict[str, Candidate] = {}
    unwell: dict[str, Candidate] = {}
    exclusions: dict[str, Exclusion] = {}
    funnel = Funnel()
    for host in hosts:
        if host.name in candidates or host.name in exclusions:
            raise ValueError(f"host {host.name} is listed twice")
        verdict = screen(host, demand)
        if isinstance(verdict, Exclusion):
            exclusions[host.name] = verdict
            funnel.add(verdict)
            if verdict.stage is Stage.HEALTH:
                well = replace(host, online=True, ready=True, drifted=False)
                if isinstance(as_if_well := screen(well, demand), Candidate):
                    unwell[host.name] = as_if_well
        else:
            candidates[host.name] = verdict
            funnel.add(None)
    funnel.done()
    return candidates, unwell, exclusions, funnel


def _keep(
    current: Sequence[Replica],
    candidates: dict[str, Candidate],
    unwell: dict[str, Candidate],
    exclusions: dict[str, Exclusion],
    demand: Demand,
) -> tuple[list[Replica], list[tuple[Replica, str]], list[tuple[Replica, str]]]:
    """Split current replicas into those that stay (claiming their share), those held where
    they are on an unhealthy host, and those that must move, with why; by ordinal, so the
    lower ordinal keeps a contested GPU. A host being offline or drifted is no reason to take
    its replicas away: an edge site cut off keeps serving and gets the changes when it is
    back (retiring a host is how its replicas move)."""
    kept: list[Replica] = []
    held: list[tuple[Replica, str]] = []
    displaced: list[tuple[Replica, str]] = []
    ordinals = [r.ordinal for r in current]
    if len(set(ordinals)) != len(ordinals):
        raise ValueError("a replica ordinal is listed twice")
    for replica in sorted(current, key=lambda r: r.ordinal):
        candidate = candidates.get(replica.host) or unwell.get(replica.host)
        if candidate is None:
            exclusion = exclusions.get(replica.host)
            displaced.append((replica, str(exclusion or f"host {replica.host} is gone")))
            continue
        why = candidate.why_not_keep(replica, demand)
        if why is not None:
            displaced.append((replica, why))
            continue
        candidate.take(demand, replica.gpus)
        if replica.host in unwell:
            held.append((replica, str(exclusions[replica.host])))
        else:
            kept.append(replica)
    return kept, held, displaced


def _free_ordinals(used: set[int], n: int) -> list[int]:
    """The `n` lowest ordinals not in use, so replica numbers stay small and stable."""
    out: list[int] = []
    ordinal = 0
    while len(out) < n:
        if ordinal not in used:
            out.append(ordinal)
        ordinal += 1
    return out


def _scale_down(
    kept: Sequence[Replica], n: int, spread: str, candidates: dict[str, Candidate]
) -> set[int]:
    """The `n` replicas to stop: from the most crowded site, then host, as `spread` wants;
    among equals the highest ordinal."""
    if spread == "none":
        return {r.ordinal for r in sorted(kept, key=lambda r: -r.ordinal)[:n]}
    on_host = _positions(kept, lambda r: r.host, lambda r: -r.ordinal)
    if spread == "hosts":
        order = sorted(kept, key=lambda r: (-on_host[r.ordinal], -r.ordinal))
    else:
        site = {name: c.host.site for name, c in candidates.items()}
        on_site = _positions(
            kept, lambda r: site[r.host], lambda r: (-on_host[r.ordinal], -r.ordinal)
        )
        order = sorted(kept, key=lambda r: (-on_site[r.ordinal], -on_host[r.ordinal], -r.ordinal))
    return {r.ordinal for r in order[:n]}


def _positions(
    replicas: Iterable[Replica],
    group: Callable[[Replica], Hashable],
    first_out: Callable[[Replica], int | tuple[int, int]],
) -> dict[int, int]:
    """For each replica, how many of its group remain when it is the next to go (the group's
    size for the first out, 1 for the last): removing the largest positions first keeps the
    groups level."""
    groups: dict[Hashable, list[Replica]] = defaultdict(list)
    for r in replicas:
        groups[group(r)].append(r)
    out: dict[int, int] = {}
    for members in groups.values():
        for i, r in enumerate(sorted(members, key=first_out)):
            out[r.ordinal] = len(members) - i
    return out


class _HostHeap:
    """Candidates that still fit, best first: fewest replicas of this deployment when
    spreading, then tightest fit (fewest free GPUs), then name."""

    def __init__(self, candidates: Iterable[Candidate], demand: Demand, spread: bool) -> None:
        self._spread = spread
        self._heap = [self._entry(c) for c in candidates if c.fits(demand)]
        heapq.heapify(self._heap)

    def _entry(self, c: Candidate) -> tuple[int, int, str, Candidate]:
        return (c.replicas if self._spread else 0, c.score, c.host.name, c)

    def __bool__(self) -> bool:
        return bool(self._heap)

    def place(self, demand: Demand) -> tuple[str, tuple[int, ...]] | None:
        if not self._heap:
            return None
        c = heapq.heappop(self._heap)[-1]
        gpus = c.take(demand)
        if c.fits(demand):
            heapq.heappush(self._heap, self._entry(c))
        return c.host.name, gpus


class _SiteRoundRobin:
    """Sites in turn, the one with fewest replicas of this deployment first (then by name);
    within a site, hosts as with spread over hosts."""

    def __init__(self, candidates: Iterable[Candidate], demand: Demand) -> None:
        by_site: dict[str, list[Candidate]] = defaultdict(list)
        for c in candidates:
            by_site[c.host.site].append(c)
        self._hosts = {site: _HostHeap(cs, demand, spread=True) for site, cs in by_site.items()}
        self._turns = [
            (sum(c.replicas for c in cs), site) for site, cs in by_site.items() if self._hosts[site]
        ]
        heapq.heapify(self._turns)

    def place(self, demand: Demand) -> tuple[str, tuple[int, ...]] | None:
        if not self._turns:
            return None
        replicas, site = heapq.heappop(self._turns)
        heap = self._hosts[site]
        spot = heap.place(demand)
        if heap:
            heapq.heappush(self._turns, (replicas + 1, site))
        return spot


def _chooser(
    spread: str, candidates: Iterable[Candidate], demand: Demand
) -> _HostHeap | _SiteRoundRobin:
    if spread == "sites":
        return _SiteRoundRobin(candidates, demand)
    return _HostHeap(candidates, demand, spread=spread == "hosts")
