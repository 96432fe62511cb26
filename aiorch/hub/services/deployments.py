"""Deployments: plan and apply specs over the live fleet, and turn the result into each
agent's desired state.

Apply runs inside one writer transaction: host snapshot, plan, policy checks, stored
replicas and the agents' new desired documents, so two applies never hand out the same GPU
and a refused apply changes nothing. Every policy decision goes to the audit log.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import sqlite_utils

from aiorch.deploy import (
    DeploymentSpec,
    Gpu,
    HostView,
    ImagePolicy,
    Outcome,
    Plan,
    PolicyDecision,
    Quota,
    Replica,
    Usage,
    check_image,
    check_quota,
    enforce,
    load_spec,
    plan_placement,
    spec_hash,
    template_hash,
)
from aiorch.errors import NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import agents, audit, images


def _hosts(ctx: HubContext, db: sqlite_utils.Database, deployment: str) -> list[HostView]:
    """Every active host as `deployment` sees it: other deployments' GPUs count as taken."""
    taken: dict[str, set[int]] = {}
    for host, gpus in db.execute(
        "SELECT host, gpus FROM deployment_replicas WHERE deployment != ?", [deployment]
    ):
        taken.setdefault(host, set()).update(json.loads(gpus))
    views = []
    for row in db.query(
        "SELECT h.name, h.site, h.region, h.role, h.labels, h.facts, h.agent_id, a.last_seen, "
        "a.revoked_at FROM hosts h LEFT JOIN agents a ON a.id = h.agent_id "
        "WHERE h.status = 'active'"
    ):
        facts = json.loads(row["facts"])
        last_seen = ctx.heartbeats.last_seen(row["agent_id"] or "", row["last_seen"])
        views.append(
            HostView(
                name=row["name"],
                site=row["site"] or "",
                region=row["region"] or "",
                role=row["role"] or "",
                labels=json.loads(row["labels"]),
                online=agents.liveness(ctx, last_seen, row["revoked_at"]) == "online",
                gpus=tuple(
                    Gpu(int(g["index"]), str(g["name"]), int(g["memory_total_bytes"]) // 2**20)
                    for g in facts.get("gpus") or []
                ),
                allocated_gpus=frozenset(taken.get(row["name"], ())),
                free_cpu=float((facts.get("cpu") or {}).get("logical") or 0),
                free_memory_mib=int(facts.get("memory_total_bytes") or 0) // 2**20,
            )
        )
    return views


def _current(db: sqlite_utils.Database, name: str) -> list[Replica]:
    rows = db.execute(
        "SELECT ordinal, host, gpus FROM deployment_replicas WHERE deployment = ? ORDER BY ordinal",
        [name],
    )
    return [Replica(r[0], r[1], tuple(json.loads(r[2]))) for r in rows]


def _decisions(
    db: sqlite_utils.Database, spec: DeploymentSpec, store: frozenset[str]
) -> list[PolicyDecision]:
    project, name = spec.metadata.project, spec.metadata.name
    limits = db.execute(
        "SELECT max_gpus, max_replicas FROM quotas WHERE project = ?", [project]
    ).fetchone()
    used = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(json_array_length(r.gpus)), 0) FROM deployment_replicas r "
        "JOIN deployments d ON d.name = r.deployment WHERE d.project = ? AND d.name != ?",
        [project, name],
    ).fetchone()
    return [
        check_quota(spec, Quota(project, *limits) if limits else None, Usage(used[1], used[0])),
        *check_image(spec, ImagePolicy(store=store)),
    ]


def _view(plan: Plan) -> dict[str, Any]:
    return {
        "kept": [asdict(r) for r in plan.kept],
        "placed": [asdict(r) for r in plan.placed],
        "moved": [asdict(m) for m in plan.moved],
        "removed": [asdict(r) for r in plan.removed],
        "unplaced": [asdict(u) for u in plan.unplaced],
        "excluded": [str(e) for e in plan.excluded],
        "changed": plan.changed,
    }


def _prepare(
    ctx: HubContext, db: sqlite_utils.Database, text: str
) -> tuple[DeploymentSpec, Plan, list[PolicyDecision]]:
    spec = load_spec(text)
    store = frozenset(
        value for row in images.list_images(ctx) for value in (row["ref"], row["digest"])
    )
    decisions = _decisions(db, spec, store)
    residency = spec.spec.placement.residency
    regions = frozenset(residency.region) if residency else None
    name = spec.metadata.name
    plan = plan_placement(spec, _hosts(ctx, db, name), _current(db, name), regions=regions)
    return spec, plan, decisions


def plan(ctx: HubContext, text: str) -> dict[str, Any]:
    """What apply would do, without doing it (policy refusals are reported, not raised)."""
    spec, placement, decisions = _prepare(ctx, ctx.store.read(), text)
    return {
        "name": spec.metadata.name,
        "project": spec.metadata.project,
        "spec_hash": spec_hash(spec),
        "plan": _view(placement),
        "decisions": [d.to_audit() for d in decisions],
    }


def _workload(spec: DeploymentSpec, stored: dict[str, Any], replica: Replica) -> dict[str, Any]:
    """One replica as its agent runs it (the contract in edge_agent/workloads)."""
    body = spec.spec
    health = body.health_check
    ports = {p.container_port: p.host_port or p.container_port for p in body.ports}
    return {
        "id": f"{spec.metadata.project}/{spec.metadata.name}/{replica.ordinal}",
        "deployment": spec.metadata.name,
        "project": spec.metadata.project,
        "replica": replica.ordinal,
        "template_hash": template_hash(spec),
        "image": {"ref": body.image, "digest": stored.get("digest"), "size": stored.get("size")},
        "command": body.command,
        "args": body.args,
        "env": body.env,
        "secret_env": {k: v.get_secret_value() for k, v in body.secret_env.items()},
        "ports": [
            {"container_port": c, "host_port": h, "protocol": "TCP"} for c, h in ports.items()
        ],
        "volumes": [v.model_dump() for v in body.volumes],
        "gpus": list(replica.gpus),
        "cpu": body.resources.cpu,
        "memory_mib": body.resources.memory_mib,
        "health_check": None
        if health is None
        else {
            "path": health.http_get.path,
            "port": ports.get(health.http_get.port, health.http_get.port),
            "initial_delay_s": health.initial_delay_seconds,
            "period_s": health.period_seconds,
            "timeout_s": health.timeout_seconds,
            "failure_threshold": health.failure_threshold,
        },
    }


def _publish(ctx: HubContext, db: sqlite_utils.Database, hosts: set[str], actor: str) -> None:
    """Rewrite the desired state of the agents on `hosts` from every deployment's replicas."""
    specs = {r[0]: load_spec(r[1]) for r in db.execute("SELECT name, spec FROM deployments")}
    # Each deployment's image is looked up once, not once per replica and host.
    stored = {name: images.resolve(ctx, spec.spec.image) or {} for name, spec in specs.items()}
    for host in sorted(hosts):
        agent = db.execute(
            "SELECT agent_id FROM hosts WHERE name = ? AND agent_id IS NOT NULL", [host]
        ).fetchone()
        if agent is None:
            continue
        workloads = [
            _workload(specs[r[0]], stored[r[0]], Replica(r[1], host, tuple(json.loads(r[2]))))
            for r in db.execute(
                "SELECT deployment, ordinal, gpus FROM deployment_replicas WHERE host = ? "
                "ORDER BY deployment, ordinal",
                [host],
            )
        ]
        agents.write_desired(db, agent[0], {"workloads": workloads}, actor, ctx.clock())


def apply(ctx: HubContext, text: str, actor: str) -> dict[str, Any]:
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> dict[str, Any]:
        spec, placement, decisions = _prepare(ctx, db, text)
        name = spec.metadata.name
        for decision in decisions:
            audit.record(db, actor, f"policy.{decision.policy}", f"deployment:{name}",
                         decision.to_audit(), ts=now)  # fmt: skip
        if any(d.outcome is Outcome.DENY for d in decisions):
            return {"denied": decisions}  # commit the audit entries only, then refuse
        digest = spec_hash(spec)
        row = db.execute("SELECT spec_hash FROM deployments WHERE name = ?", [name]).fetchone()
        if row is not None and row[0] == digest and not placement.changed:
            return {"name": name, "changed": False, "plan": _view(placement)}
        before = {r.host for r in _current(db, name)}
        db.execute(
            "INSERT INTO deployments (name, project, spec, spec_hash, generation, updated_by, "
            "updated_at) VALUES (?, ?, ?, ?, 1, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "project = excluded.project, spec = excluded.spec, spec_hash = excluded.spec_hash, "
            "generation = generation + 1, updated_by = excluded.updated_by, "
            "updated_at = excluded.updated_at",
            [name, spec.metadata.project, text, digest, actor, now],
        )
        db.execute("DELETE FROM deployment_replicas WHERE deployment = ?", [name])
        db.conn.executemany(
            "INSERT INTO deployment_replicas (deployment, ordinal, host, gpus) VALUES (?, ?, ?, ?)",
            [(name, r.ordinal, r.host, json.dumps(list(r.gpus))) for r in placement.replicas],
        )
        _publish(ctx, db, before | {r.host for r in placement.replicas}, actor)
        summary = {"replicas": len(placement.replicas), "unplaced": len(placement.unplaced)}
        audit.record(db, actor, "deployment.apply", f"deployment:{name}", summary, ts=now)
        return {"name": name, "changed": True, "plan": _view(placement)}

    result = ctx.store.write(op)
    if "denied" in result:
        enforce(result["denied"])
    return result


def delete(ctx: HubContext, name: str, actor: str) -> None:
    def op(db: sqlite_utils.Database) -> None:
        hosts = {r.host for r in _current(db, name)}
        if db.execute("DELETE FROM deployments WHERE name = ?", [name]).rowcount == 0:
            raise NotFound(f"no deployment named {name}")
        db.execute("DELETE FROM deployment_replicas WHERE deployment = ?", [name])
        _publish(ctx, db, hosts, actor)
        audit.record(db, actor, "deployment.delete", f"deployment:{name}", ts=ctx.clock())

    ctx.store.write(op)


def list_deployments(ctx: HubContext) -> list[dict[str, Any]]:
    return list(
        ctx.store.read().query(
            "SELECT d.name, d.project, d.generation, d.updated_by, d.updated_at, "
            "COUNT(r.ordinal) AS replicas FROM deployments d "
            "LEFT JOIN deployment_replicas r ON r.deployment = d.name "
            "GROUP BY d.name ORDER BY d.name"
        )
    )


def show(ctx: HubContext, name: str) -> dict[str, Any]:
    """A deployment with its replicas and what their agents last reported about them."""
    db = ctx.store.read()
    rows = list(db.query("SELECT * FROM deployments WHERE name = ?", [name]))
    if not rows:
        raise NotFound(f"no deployment named {name}")
    spec = load_spec(rows[0]["spec"])
    replicas = []
    for ordinal, host, gpus, report in db.execute(
        "SELECT r.ordinal, r.host, r.gpus, a.report FROM deployment_replicas r "
        "JOIN hosts h ON h.name = r.host LEFT JOIN agents a ON a.id = h.agent_id "
        "WHERE r.deployment = ? ORDER BY r.ordinal",
        [name],
    ):
        workload_id = f"{spec.metadata.project}/{name}/{ordinal}"
        seen = (json.loads(report or "{}").get("workloads") or {}).get(workload_id) or {}
        replicas.append(
            {
                "replica": ordinal,
                "host": host,
                "gpus": json.loads(gpus),
                "state": seen.get("state", "pending"),
                "reason": seen.get("reason"),
            }
        )
    return {
        "name": name,
        "project": spec.metadata.project,
        "generation": rows[0]["generation"],
        "spec": spec.model_dump(mode="json", by_alias=True),
        "replicas": replicas,
    }


def set_quota(
    ctx: HubContext, project: str, max_gpus: int | None, max_replicas: int | None, actor: str
) -> dict[str, Any]:
    row = {"project": project, "max_gpus": max_gpus, "max_replicas": max_replicas}

    def op(db: sqlite_utils.Database) -> None:
        db.table("quotas").upsert(row, pk="project")
        audit.record(db, actor, "quota.set", f"project:{project}", row, ts=ctx.clock())

    ctx.store.write(op)
    return row
