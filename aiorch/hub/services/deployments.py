"""Deployments: plan and apply specs over the live fleet, and turn the result into each
agent's desired state.

Apply parses, checks policies and places from a read snapshot, off the writer thread (the
writer serves every heartbeat and telemetry batch). The writer then only verifies that what
the plan was based on is unchanged and stores it: replicas, revisions and the agents' new
desired documents in one transaction. A plan overtaken by another change is made again, so
two applies never hand out the same GPU and a refused apply changes nothing. Every policy
decision goes to the audit log.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import sqlite_utils

from aiorch.deploy import (
    DeploymentSpec,
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
from aiorch.deploy.rollout import ACTIVE, FAILED, SUCCEEDED
from aiorch.deploy.spec import with_template
from aiorch.errors import Conflict, NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import (
    audit,
    authz,
    budgets,
    fleet_view,
    images,
    projects,
    replicas,
    rollouts,
    specs,
)
from aiorch.hub.services.auth import Principal
from aiorch.jobs.states import HOLDING


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
        check_quota(
            spec,
            Quota(project, *limits) if limits else None,
            Usage(used[1] + budgets.job_gpus_held(db, project), used[0]),
        ),
        *check_image(spec, ImagePolicy(store=store)),
    ]


def _view(plan: Plan) -> dict[str, Any]:
    return {
        "kept": [asdict(r) for r in plan.kept],
        "placed": [asdict(r) for r in plan.placed],
        "moved": [asdict(m) for m in plan.moved],
        "removed": [asdict(r) for r in plan.removed],
        "unplaced": plan.unplaced_summary,
        "excluded": [str(e) for e in plan.excluded],
        "changed": plan.changed,
    }


@dataclass(frozen=True)
class _Prepared:
    """A plan made from a read snapshot, with what it was based on (see `_basis`)."""

    spec: DeploymentSpec
    placement: Plan
    decisions: list[PolicyDecision]
    hosts: list[HostView]
    basis: tuple[Any, ...]


APPLY_ATTEMPTS = 5  # plans made again when the fleet changed under them, before a 409
_CHUNK = 500  # host names per IN (...) list


def _basis(db: sqlite_utils.Database, spec: DeploymentSpec, placement: Plan) -> tuple[Any, ...]:
    """What a plan rests on, cheap to read again inside the writer: every deployment's
    generation (its spec and quota use), every replica's host, GPUs and revision (what it holds
    there: ports, CPU, memory), the job attempts holding GPUs, the rows of the hosts the plan
    puts replicas on, and the project's quota and placement policy. Any other change (a new
    host, an agent going quiet) is as if it came just after the apply."""
    used = sorted({r.host for r in placement.replicas})
    hosts: list[Any] = []
    for start in range(0, len(used), _CHUNK):
        chunk = used[start : start + _CHUNK]
        hosts += db.execute(
            "SELECT name, status, site, region, role, labels, facts FROM hosts "
            f"WHERE name IN ({','.join('?' * len(chunk))}) ORDER BY name",
            chunk,
        ).fetchall()
    return (
        db.execute("SELECT name, generation, spec_hash FROM deployments ORDER BY name").fetchall(),
        db.execute(
            "SELECT deployment, ordinal, host, gpus, revision FROM deployment_replicas "
            "ORDER BY deployment, ordinal"
        ).fetchall(),
        hosts,
        db.execute(  # what job attempts hold: the same ledger
            "SELECT id, host, gpus, state FROM job_attempts WHERE state IN (?, ?, ?) ORDER BY id",
            sorted(HOLDING),
        ).fetchall(),
        db.execute(
            "SELECT max_gpus, max_replicas FROM quotas WHERE project = ?", [spec.metadata.project]
        ).fetchall(),
        projects.policy(db, spec.metadata.project),
    )


def _prepare(ctx: HubContext, db: sqlite_utils.Database, spec: DeploymentSpec) -> _Prepared:
    """Policies and placement of `spec` over `db` (a snapshot, never the writer's), on the
    hosts its project may use, with the images its project owns or `default` shares."""
    project, name = spec.metadata.project, spec.metadata.name
    owner = db.execute("SELECT project FROM deployments WHERE name = ?", [name]).fetchone()
    if owner is not None and owner[0] != project:
        raise Conflict(f"a deployment named {name} exists in another project; pick another name")
    owned = images.list_images(ctx, frozenset({project, projects.DEFAULT}))
    store = frozenset(value for row in owned for value in (row["ref"], row["digest"]))
    decisions = _decisions(db, spec, store)
    placement, hosts = placed(ctx, db, spec)
    return _Prepared(spec, placement, decisions, hosts, _basis(db, spec, placement))


def placed(
    ctx: HubContext, db: sqlite_utils.Database, spec: DeploymentSpec
) -> tuple[Plan, list[HostView]]:
    """Where `spec`'s replicas would go, from where they are, on the hosts its project may
    use (the autoscaler asks it how many replicas would fit)."""
    residency = spec.spec.placement.residency
    regions = frozenset(residency.region) if residency else None
    hosts = projects.placeable(db, spec.metadata.project, fleet_view.host_views(ctx, db, spec.name))
    return plan_placement(spec, hosts, _current(db, spec.name), regions=regions), hosts


def _prepare_from_snapshot(ctx: HubContext, spec: DeploymentSpec) -> _Prepared:
    with ctx.store.snapshot() as db:
        return _prepare(ctx, db, spec)


def _deliverable(ctx: HubContext, text: str, principal: Principal | None) -> DeploymentSpec:
    """The spec in `text`, valid for the hub and for the agents that will run it, from a
    caller who may deploy to its project (`principal` None: the hub itself)."""
    spec = load_spec(text)
    if principal is not None:
        authz.authorize(principal, "deployment.apply", authz.in_project(spec.metadata.project))
    replicas.refuse_undeliverable(ctx, spec)
    return spec


def plan(ctx: HubContext, text: str, *, principal: Principal | None = None) -> dict[str, Any]:
    """What apply would do, without doing it (policy refusals are reported, not raised)."""
    prepared = _prepare_from_snapshot(ctx, _deliverable(ctx, text, principal))
    spec = prepared.spec
    return {
        "name": spec.metadata.name,
        "project": spec.metadata.project,
        "spec_hash": spec_hash(spec),
        "plan": _view(prepared.placement),
        "decisions": [d.to_audit() for d in prepared.decisions],
    }


def _revision(
    ctx: HubContext, db: sqlite_utils.Database, spec: DeploymentSpec, actor: str, now: float
) -> int:
    """The revision number of `spec`'s template: the one it already had, or the next."""
    name, template = spec.metadata.name, template_hash(spec)
    found = db.execute(
        "SELECT revision FROM deployment_revisions WHERE deployment = ? AND template_hash = ?",
        [name, template],
    ).fetchone()
    if found is not None:
        return int(found[0])
    revision = (
        1
        + db.execute(
            "SELECT COALESCE(MAX(revision), 0) FROM deployment_revisions WHERE deployment = ?",
            [name],
        ).fetchone()[0]
    )
    db.table("deployment_revisions").insert(
        {"deployment": name, "revision": revision, "template_hash": template,
         "spec": specs.to_store(ctx, spec), "created_by": actor, "created_at": now}
    )  # fmt: skip
    return int(revision)


def _write(
    ctx: HubContext,
    db: sqlite_utils.Database,
    spec: DeploymentSpec,
    placement: Plan,
    hosts: list[HostView],
    actor: str,
    audited: tuple[str, dict[str, Any]] = ("deployment.apply", {}),
) -> dict[str, Any]:
    """Store the spec and its placement; a new template starts a rollout to its revision.
    `audited`: the audit action and what it adds to the summary."""
    now, name = ctx.clock(), spec.metadata.name
    revision = _revision(ctx, db, spec, actor, now)
    stored = specs.to_store(ctx, spec)
    previous = db.execute("SELECT revision FROM deployments WHERE name = ?", [name]).fetchone()
    existing = db.execute(
        "SELECT ordinal, host, revision FROM deployment_replicas WHERE deployment = ?", [name]
    ).fetchall()
    before = {host for _, host, _ in existing}
    running = {ordinal: revision for ordinal, _, revision in existing}
    db.execute(
        "INSERT INTO deployments (name, project, spec, spec_hash, generation, updated_by, "
        "updated_at, revision, stable_revision) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET project = excluded.project, spec = excluded.spec, "
        "spec_hash = excluded.spec_hash, generation = generation + 1, "
        "updated_by = excluded.updated_by, updated_at = excluded.updated_at, "
        "revision = excluded.revision",
        [name, spec.metadata.project, stored, spec_hash(spec), actor, now, revision, revision],
    )
    kept = {r.ordinal for r in placement.kept}
    db.execute("DELETE FROM deployment_replicas WHERE deployment = ?", [name])
    db.conn.executemany(
        "INSERT INTO deployment_replicas (deployment, ordinal, host, gpus, revision) "
        "VALUES (?, ?, ?, ?, ?)",
        [
            (name, r.ordinal, r.host, json.dumps(list(r.gpus)),
             running[r.ordinal] if r.ordinal in kept else revision)
            for r in placement.replicas
        ],
    )  # fmt: skip
    if previous is None or previous[0] != revision:
        rollouts.begin(ctx, db, name, revision, {h.name: h for h in hosts}, actor)
    replicas.publish(ctx, db, before | {r.host for r in placement.replicas}, actor)
    summary = {"replicas": len(placement.replicas), "unplaced": len(placement.unplaced),
               "revision": revision}  # fmt: skip
    action, detail = audited
    audit.record(db, actor, action, f"deployment:{name}", {**detail, **summary}, ts=now)
    return {"name": name, "changed": True, "revision": revision, "plan": _view(placement)}


def _commit(
    ctx: HubContext,
    db: sqlite_utils.Database,
    prepared: _Prepared,
    actor: str,
    audited: tuple[str, dict[str, Any]] = ("deployment.apply", {}),
) -> dict[str, Any] | None:
    """On the writer: store a prepared plan, or None when what it was based on changed."""
    spec, placement = prepared.spec, prepared.placement
    if _basis(db, spec, placement) != prepared.basis:
        return None
    now, name = ctx.clock(), spec.metadata.name
    for decision in prepared.decisions:
        audit.record(db, actor, f"policy.{decision.policy}", f"deployment:{name}",
                     decision.to_audit(), ts=now)  # fmt: skip
    if any(d.outcome is Outcome.DENY for d in prepared.decisions):
        return {"denied": prepared.decisions}  # commit the audit entries only, then refuse
    row = db.execute("SELECT spec_hash FROM deployments WHERE name = ?", [name]).fetchone()
    if row is not None and row[0] == spec_hash(spec) and not placement.changed:
        return {"name": name, "changed": False, "plan": _view(placement)}
    return _write(ctx, db, spec, placement, prepared.hosts, actor, audited)


def _attempt(ctx: HubContext, spec: DeploymentSpec, actor: str) -> dict[str, Any] | None:
    prepared = _prepare_from_snapshot(ctx, spec)
    return ctx.store.write(lambda db: _commit(ctx, db, prepared, actor))


def rescale(
    ctx: HubContext, spec: DeploymentSpec, count: int, actor: str, detail: dict[str, Any]
) -> dict[str, Any] | None:
    """`spec` (as stored) at `count` replicas, through apply's own planning and policies,
    audited as `deployment.autoscale` with `detail`. None when the deployment changed since
    `spec` was read (the caller decides again) or a policy refused it (audited as such)."""
    scaled = spec.model_copy(update={"spec": spec.spec.model_copy(update={"replicas": count})})
    with ctx.store.snapshot() as db:
        row = db.execute("SELECT spec_hash FROM deployments WHERE name = ?", [spec.name])
        if row.fetchone() != (spec_hash(spec),):
            return None  # the commit's basis check holds the stored spec to this one
        prepared = _prepare(ctx, db, scaled)
    audited = ("deployment.autoscale", detail)
    result = ctx.store.write(lambda db: _commit(ctx, db, prepared, actor, audited))
    return None if result is None or "denied" in result else result


def apply(
    ctx: HubContext, text: str, actor: str, *, principal: Principal | None = None
) -> dict[str, Any]:
    spec = _deliverable(ctx, text, principal)
    for _ in range(APPLY_ATTEMPTS):
        result = _attempt(ctx, spec, actor)
        if result is not None:
            break
    else:
        raise Conflict(
            f"the fleet changed under each of {APPLY_ATTEMPTS} plans of {spec.metadata.name}; "
            "apply again"
        )
    if "denied" in result:
        enforce(result["denied"])
    return result


def undo(ctx: HubContext, name: str, actor: str) -> dict[str, Any]:
    """Back to the revision before: a rollout in progress (or failed) is rolled back at once;
    after a finished one, the previous template is rolled out again, wave by wave."""
    with ctx.store.snapshot() as snapshot:  # the hosts, for waves: read off the writer
        hosts = fleet_view.host_views(ctx, snapshot, name)

    def op(db: sqlite_utils.Database) -> None:
        if db.execute("SELECT 1 FROM deployments WHERE name = ?", [name]).fetchone() is None:
            raise NotFound(f"no deployment named {name}")
        last = rollouts.latest(db, name)
        if last is not None and last["state"] in (*ACTIVE, FAILED):
            rollouts.roll_back(ctx, db, last, f"undone by {actor}", actor)
            return
        if last is None or last["state"] != SUCCEEDED:
            state = "no rollout" if last is None else f"its last rollout was {last['state']}"
            raise Conflict(f"deployment {name} has no earlier revision to go back to ({state})")
        current = specs.current(ctx, db, name)
        spec = with_template(current, specs.revision(ctx, db, name, last["from_revision"]))
        _write(ctx, db, spec, Plan(kept=tuple(_current(db, name))), hosts, actor)

    ctx.store.write(op)
    return rollouts.status(ctx, name)


def delete(ctx: HubContext, name: str, actor: str) -> None:
    def op(db: sqlite_utils.Database) -> None:
        hosts = {r.host for r in _current(db, name)}
        if db.execute("DELETE FROM deployments WHERE name = ?", [name]).rowcount == 0:
            raise NotFound(f"no deployment named {name}")
        for table in (
            "deployment_replicas", "deployment_revisions", "rollouts", "deployment_autoscale"
        ):  # fmt: skip
            db.execute(f"DELETE FROM {table} WHERE deployment = ?", [name])
        replicas.publish(ctx, db, hosts, actor)
        audit.record(db, actor, "deployment.delete", f"deployment:{name}", ts=ctx.clock())

    ctx.store.write(op)
