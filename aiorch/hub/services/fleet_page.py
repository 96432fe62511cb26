"""What the dashboard's fleet and host pages show, read so that a fleet of thousands of hosts
answers within a second: counts come from one pass over small columns, facts are parsed only
for the hosts on the page (readiness for the counts is remembered by the facts' digest), and
GPU readings come from the in-memory latest values, not the sample table."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from aiorch.errors import InvalidInput, NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import agents
from edge_agent.contract.facts import HostFacts, stored_facts
from edge_agent.contract.telemetry import GPU_UTILIZATION, SIMULATED_LABEL

PAGE_SIZE = 50
# The GPU readings a host page shows beside each GPU's facts.
GPU_READINGS = {
    GPU_UTILIZATION: "utilization",
    "gpu_memory_used_bytes": "memory_used",
    "gpu_temperature_celsius": "temperature",
    "gpu_power_watts": "power",
}
_READY_MEMO_MAX = 65_536
_ready_memo: dict[bytes, bool] = {}


@dataclass(frozen=True)
class Paged:
    rows: list[dict[str, Any]]
    page: int
    pages: int
    total: int

    @property
    def previous(self) -> int | None:
        return self.page - 1 if self.page > 1 else None

    @property
    def next(self) -> int | None:
        return self.page + 1 if self.page < self.pages else None


def page_offset(total: int, page: int, size: int = PAGE_SIZE) -> tuple[int, int]:
    """(offset, pages) for `page` of `total` rows; a page past the last is a 404."""
    if page < 1:
        raise InvalidInput(f"page must be 1 or more, not {page}")
    pages = max(1, math.ceil(total / size))
    if page > pages:
        raise NotFound(f"page {page} is past the last page ({pages})")
    return (page - 1) * size, pages


def ready(facts: HostFacts | None) -> bool:
    """Placement's readiness: facts that parse, and a container runtime (fleet_view's rule)."""
    return facts is not None and facts.can_run_workloads


def _ready_by_digest(facts_text: str) -> bool:
    """Readiness of stored facts, remembered by their digest: the counts of a big fleet then
    cost a hash per host, not a parse (facts change rarely)."""
    key = hashlib.blake2b(facts_text.encode(), digest_size=16).digest()
    found = _ready_memo.get(key)
    if found is None:
        if len(_ready_memo) >= _READY_MEMO_MAX:
            _ready_memo.clear()
        found = _ready_memo[key] = ready(stored_facts(facts_text))
    return found


@functools.lru_cache(maxsize=1 << 17)
def _gpu_of(labels: str) -> tuple[str, bool]:
    """(GPU index, simulated) from a series' labels; remembered, as every page asks for all
    GPUs' latest values and a GPU's labels do not change."""
    values = json.loads(labels)
    return values.get("gpu", "?"), values.get(SIMULATED_LABEL) == "true"


def gpu_readings(
    ctx: HubContext, metrics: dict[str, str] | None = None, agent_ids: Collection[str] | None = None
) -> dict[str, dict[str, dict[str, Any]]]:
    """agent id -> GPU index -> {"simulated": bool, name: newest value} for each metric in
    `metrics` (metric -> name; default: utilization only), from the in-memory latest values;
    of `agent_ids` only, when given."""
    wanted = metrics or {GPU_UTILIZATION: "utilization"}
    out: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for (agent, metric, labels), latest in ctx.latest.snapshot().items():
        if metric not in wanted or (agent_ids is not None and agent not in agent_ids):
            continue
        index, simulated = _gpu_of(labels)
        gpu = out[agent].setdefault(index, {"simulated": simulated})
        gpu[wanted[metric]] = latest.value
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summary(ctx: HubContext) -> dict[str, Any]:
    """Per site and for the whole fleet: hosts by agent state, drifted, not ready, and GPUs
    (real and simulated apart) with their mean current utilization."""
    db = ctx.store.read()
    drifted = {r[0] for r in db.execute("SELECT host FROM drift WHERE state = 'drifted'")}
    readings = gpu_readings(ctx)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    used: dict[str, dict[bool, list[float]]] = defaultdict(lambda: {True: [], False: []})
    for name, site, agent_id, facts, last_seen, revoked_at in db.execute(
        "SELECT h.name, h.site, h.agent_id, h.facts, a.last_seen, a.revoked_at "
        "FROM hosts h LEFT JOIN agents a ON a.id = h.agent_id WHERE h.status != 'retired'"
    ):
        state = agents.host_agent_status(ctx, agent_id, last_seen, revoked_at)
        not_ready = not _ready_by_digest(facts)
        gpus = readings.get(agent_id or "", {}).values()
        for key in (site or "-", ""):  # "" is the whole fleet
            count = counts[key]
            count["hosts"] += 1
            count[state] += 1
            count["drifted"] += name in drifted
            count["not_ready"] += not_ready
            for gpu in gpus:
                count["gpus_simulated" if gpu["simulated"] else "gpus"] += 1
                used[key][gpu["simulated"]].append(gpu["utilization"])
    rows = [
        {
            "site": key,
            **{k: counts[key][k] for k in ("hosts", "online", "offline", "revoked", "none")},
            **{k: counts[key][k] for k in ("drifted", "not_ready", "gpus", "gpus_simulated")},
            "utilization": _mean(used[key][False]),
            "utilization_simulated": _mean(used[key][True]),
        }
        for key in sorted(counts)
    ]
    total = rows.pop(0) if rows and rows[0]["site"] == "" else None
    return {"sites": rows, "fleet": total}


def host_list(ctx: HubContext, site: str | None, page: int) -> Paged:
    """One page of hosts (by site, then name), facts parsed for those hosts only."""
    db = ctx.store.read()
    where, params = "WHERE h.status != 'retired'", []
    if site:
        where, params = f"{where} AND h.site = ?", [site]
    total = db.execute(f"SELECT COUNT(*) FROM hosts h {where}", params).fetchone()[0]
    offset, pages = page_offset(total, page)
    rows = list(
        db.query(
            "SELECT h.name, h.site, h.role, h.agent_id, h.facts, a.last_seen, a.revoked_at "
            f"FROM hosts h LEFT JOIN agents a ON a.id = h.agent_id {where} "
            "ORDER BY h.site, h.name LIMIT ? OFFSET ?",
            [*params, PAGE_SIZE, offset],
        )
    )
    drifted = {r[0] for r in db.execute("SELECT host FROM drift WHERE state = 'drifted'")}
    readings = gpu_readings(ctx, agent_ids={r["agent_id"] for r in rows if r["agent_id"]})
    out = []
    for row in rows:
        facts = stored_facts(row["facts"])
        gpus = list(readings.get(row["agent_id"] or "", {}).values())
        out.append(
            {
                "name": row["name"],
                "site": row["site"],
                "role": row["role"],
                "agent": agents.host_agent_status(
                    ctx, row["agent_id"], row["last_seen"], row["revoked_at"]
                ),
                "last_seen": ctx.heartbeats.last_seen(row["agent_id"] or "", row["last_seen"]),
                "drifted": row["name"] in drifted,
                "ready": ready(facts),
                "gpus": len(facts.gpus) if facts else 0,
                "gpus_simulated": bool(facts and facts.gpus_simulated),
                "utilization": _mean([g["utilization"] for g in gpus]),
            }
        )
    return Paged(out, page, pages, total)


def host_detail(ctx: HubContext, name: str) -> dict[str, Any]:
    """One host: its inventory row, its agent, its last drift finding, its facts, and each
    GPU from the facts with its newest readings."""
    db = ctx.store.read()
    rows = list(
        db.query(
            "SELECT h.name, h.site, h.role, h.region, h.labels, h.groups, h.status, h.agent_id, "
            "h.facts, h.updated_at, a.last_seen, a.revoked_at, a.agent_version, a.enrolled_at "
            "FROM hosts h LEFT JOIN agents a ON a.id = h.agent_id WHERE h.name = ?",
            [name],
        )
    )
    if not rows:
        raise NotFound(f"no host named {name}")
    row = rows[0]
    drift = db.execute("SELECT state, reason FROM drift WHERE host = ?", [name]).fetchone()
    facts = stored_facts(row["facts"])
    agent_id = row["agent_id"]
    readings = gpu_readings(ctx, GPU_READINGS, {agent_id or ""}).get(agent_id or "", {})
    gpus = [
        {
            "index": gpu.index,
            "name": gpu.name,
            "memory_total": gpu.memory_total_bytes,
            "simulated": gpu.simulated,
            **readings.get(str(gpu.index), {}),
        }
        for gpu in (facts.gpus if facts else ())
    ]
    return {
        **{k: row[k] for k in ("name", "site", "role", "region", "status", "agent_id")},
        "labels": json.loads(row["labels"]),
        "groups": json.loads(row["groups"]),
        "agent": agents.host_agent_status(ctx, agent_id, row["last_seen"], row["revoked_at"]),
        "agent_version": row["agent_version"],
        "last_seen": ctx.heartbeats.last_seen(agent_id or "", row["last_seen"]),
        "drift": None if drift is None else {"state": drift[0], "reason": drift[1]},
        "facts": facts,
        "ready": ready(facts),
        "facts_document": json.dumps(json.loads(row["facts"]), indent=2, sort_keys=True),
        "gpus": gpus,
    }
