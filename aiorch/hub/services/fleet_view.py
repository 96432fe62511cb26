"""The fleet as placement sees it for one deployment (or for the job queue): every active host
with its capacity from the facts its agent sent, minus what the other deployments' replicas
and every job attempt holding GPUs hold there. One ledger: a deployment never takes a GPU a
job holds, nor a job one a replica holds. A host whose latest GPU acceptance record failed
carries the refusal (placement's gpu_acceptance_refusal rule)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import sqlite_utils

from aiorch.deploy import Gpu, HostView
from aiorch.deploy.eligibility import Demand
from aiorch.hub.context import HubContext
from aiorch.hub.services import agents, gpu_acceptance, specs
from aiorch.jobs.states import HOLDING
from edge_agent.contract.facts import stored_facts


@dataclass
class _Held:
    """What other deployments' replicas and job attempts hold on one host."""

    gpus: set[int] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)
    cpu: float = 0.0
    memory_mib: int = 0


def _held(ctx: HubContext, db: sqlite_utils.Database, deployment: str) -> dict[str, _Held]:
    """By host, what every other deployment's replicas hold there, each replica counted with
    the demand of the revision it runs (placement's own rules, host-port defaults included)."""
    demands: dict[tuple[str, int], Demand] = {}
    held: dict[str, _Held] = defaultdict(_Held)
    for name, revision, host, gpus in db.execute(
        "SELECT deployment, revision, host, gpus FROM deployment_replicas WHERE deployment != ?",
        [deployment],
    ):
        if (name, revision) not in demands:
            demands[(name, revision)] = Demand.of(specs.revision(ctx, db, name, revision))
        demand, use = demands[(name, revision)], held[host]
        use.gpus.update(json.loads(gpus))
        use.ports |= demand.host_ports
        use.cpu += demand.cpu
        use.memory_mib += demand.memory_mib
    marks = ",".join("?" * len(HOLDING))
    for host, gpus, spec in db.execute(
        "SELECT a.host, a.gpus, j.spec FROM job_attempts a JOIN jobs j ON j.id = a.job_id "
        f"WHERE a.host IS NOT NULL AND a.state IN ({marks})",
        sorted(HOLDING),
    ):
        resources, use = json.loads(spec)["spec"]["resources"], held[host]
        use.gpus.update(json.loads(gpus))
        use.cpu += resources.get("cpu") or 0.0
        use.memory_mib += resources.get("memoryMiB") or 0
    return held


def host_views(ctx: HubContext, db: sqlite_utils.Database, deployment: str = "") -> list[HostView]:
    """Every active host as `deployment` sees it (the job queue passes none): what other
    deployments and the jobs hold counts as taken.
    A host whose stored facts do not parse shows no capacity and is not ready."""
    held = _held(ctx, db, deployment)
    drifted = {r[0] for r in db.execute("SELECT host FROM drift WHERE state = 'drifted'")}
    refused = gpu_acceptance.refusals(db)
    views = []
    for row in db.query(
        "SELECT h.name, h.site, h.region, h.role, h.labels, h.facts, h.agent_id, a.last_seen, "
        "a.revoked_at FROM hosts h LEFT JOIN agents a ON a.id = h.agent_id "
        "WHERE h.status = 'active'"
    ):
        facts = stored_facts(row["facts"])
        use = held.get(row["name"], _Held())
        last_seen = ctx.heartbeats.last_seen(row["agent_id"] or "", row["last_seen"])
        views.append(
            HostView(
                name=row["name"],
                site=row["site"] or "",
                region=row["region"] or "",
                role=row["role"] or "",
                labels=json.loads(row["labels"]),
                online=agents.liveness(ctx, last_seen, row["revoked_at"]) == "online",
                drifted=row["name"] in drifted,  # the last drift check found changes there
                ready=facts is not None and facts.can_run_workloads,
                gpus=()
                if facts is None
                else tuple(Gpu(g.index, g.name, g.memory_mib) for g in facts.gpus),
                allocated_gpus=frozenset(use.gpus),
                free_cpu=max(0.0, (facts.cpu_logical if facts else 0) - use.cpu),
                free_memory_mib=max(
                    0, (facts.memory_total_bytes if facts else 0) // 2**20 - use.memory_mib
                ),
                used_host_ports=frozenset(use.ports),
                gpu_acceptance_failed=refused.get(row["name"]),
            )
        )
    return views
