"""Why a replica found no host, in one sentence a person can act on.

The sentence names the narrowest stage that left nothing: no host in the region, none matching
the selector, all of those excluded (and which and why: unhealthy, or a failed GPU acceptance),
none with enough GPUs of the kind, or no room left (how much is free, per site).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiorch.deploy.eligibility import EPSILON, Candidate, Demand, Exclusion, Stage, mib

LISTED = 4  # hosts or sites named in one reason; the rest are counted


@dataclass(slots=True)
class Funnel:
    """How many hosts each stage turned away, and the hosts excluded at health or hardware
    (by name once `done` is called)."""

    total: int = 0
    failed: Counter[Stage] = field(default_factory=Counter)
    notable: list[Exclusion] = field(default_factory=list)

    def add(self, exclusion: Exclusion | None) -> None:
        self.total += 1
        if exclusion is not None:
            self.failed[exclusion.stage] += 1
            if exclusion.stage >= Stage.HEALTH:
                self.notable.append(exclusion)

    def done(self) -> None:
        self.notable.sort(key=lambda e: e.host)

    def passed(self, stage: Stage) -> int:
        return self.total - sum(n for s, n in self.failed.items() if s <= stage)


def unplaced_reason(demand: Demand, funnel: Funnel, candidates: Sequence[Candidate]) -> str:
    where = f" in region {demand.regions_text()}" if demand.regions is not None else ""
    matching = f" matching selector {demand.selector_text()}" if demand.selector else ""
    if funnel.total == 0:
        return "the inventory has no hosts"
    if funnel.passed(Stage.REGION) == 0:
        return f"no host{where}"
    if funnel.passed(Stage.SELECTOR) == 0:
        return f"no host{where} matches selector {demand.selector_text()}"
    if funnel.passed(Stage.ACCEPTANCE) == 0:
        hosts = [e for e in funnel.notable if e.stage <= Stage.ACCEPTANCE]
        listed = _listed([_excluded(e) for e in hosts])
        return f"every host{where}{matching} is excluded: {listed}"
    if funnel.passed(Stage.HARDWARE) == 0:
        hosts = [e for e in funnel.notable if e.stage == Stage.HARDWARE]
        most = max(e.matching_gpus for e in hosts)
        listed = _listed([e.host for e in hosts if e.matching_gpus == most])
        return (
            f"needs {demand.gpus} x {demand.gpu_kind()} on one host; "
            f"no healthy host{where}{matching} has more than {most} ({listed})"
        )
    return f"needs {demand.describe()}; {_shortage(demand, candidates)}"


def _excluded(e: Exclusion) -> str:
    """`h1 offline`, or the acceptance refusal, which names its host."""
    return e.reason if e.stage is Stage.ACCEPTANCE else f"{e.host} {e.reason}"


def _shortage(demand: Demand, candidates: Sequence[Candidate]) -> str:
    parts = []
    if demand.gpus and all(len(c.free_gpus) < demand.gpus for c in candidates):
        parts.append(_free_gpus_by_site(demand, candidates))
    if demand.cpu and all(c.cpu + EPSILON < demand.cpu for c in candidates):
        parts.append(f"at most {max(c.cpu for c in candidates):g} CPU free on one host")
    if demand.memory_mib and all(c.memory_mib < demand.memory_mib for c in candidates):
        most = max(c.memory_mib for c in candidates)
        parts.append(f"at most {mib(most)} memory free on one host")
    if demand.host_ports and all(not c.ports.isdisjoint(demand.host_ports) for c in candidates):
        parts.append(f"its hostPort is in use on all {len(candidates)} eligible hosts")
    if not parts:
        parts.append(f"none of the {len(candidates)} eligible hosts has all of it free at once")
    return "; ".join(parts)


def _free_gpus_by_site(demand: Demand, candidates: Sequence[Candidate]) -> str:
    total: Counter[str] = Counter()
    largest: Counter[str] = Counter()
    for c in candidates:
        site = c.host.site or "(none)"
        total[site] += len(c.free_gpus)
        largest[site] = max(largest[site], len(c.free_gpus))
    sites = sorted(total, key=lambda s: (-total[s], s))
    texts = [
        f"site {s} has {total[s]} free"
        + (f" but at most {largest[s]} on one host" if total[s] >= demand.gpus else "")
        for s in sites
    ]
    return _listed(texts, noun="sites")


def _listed(texts: Sequence[str], noun: str = "hosts") -> str:
    shown = ", ".join(texts[:LISTED])
    more = len(texts) - LISTED
    return f"{shown} and {more} more {noun}" if more > 0 else shown
