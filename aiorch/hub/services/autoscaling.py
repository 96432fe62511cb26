"""The autoscaling pass: every autoscaled deployment's replica count follows the load its
agents report, through apply's own planning, policies and audit (`deployments.rescale`).

Reading is off the writer (a snapshot); only a state that changed, and a scale, are written.
Only replicas whose agents are online count (see `aiorch.deploy.autoscale.decide` for what
missing data may and may not do), and a replica still starting has no value yet.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlite_utils

from aiorch.deploy import DeploymentSpec
from aiorch.deploy.autoscale import Decision, Pending, decide
from aiorch.hub.context import HubContext
from aiorch.hub.services import deployments, replicas, specs

log = logging.getLogger("aiorch.hub.autoscaling")

ACTOR = "hub:autoscaler"
_COLUMNS = ("load", "complete", "desired", "wanted", "since")


def stored_state(db: sqlite_utils.Database, name: str) -> dict[str, Any] | None:
    """What the last pass found for deployment `name`: the summed load (None: no replica
    reported one), whether every replica reported, the count that asks for, and the count
    waiting out its delay with since when (both None: no change wanted)."""
    row = db.execute(
        f"SELECT {', '.join(_COLUMNS)}, updated_at FROM deployment_autoscale WHERE deployment = ?",
        [name],
    ).fetchone()
    if row is None:
        return None
    state = dict(zip((*_COLUMNS, "updated_at"), row, strict=True))
    return {**state, "complete": bool(state["complete"])}


def _decision(ctx: HubContext, db: sqlite_utils.Database, spec: DeploymentSpec) -> Decision | None:
    policy = spec.spec.autoscale
    if policy is None:
        return None
    seen = replicas.observe(ctx, db, spec.name, spec.project)
    loads = [o.load if o.online else None for _, o in seen]
    current = spec.spec.replicas
    fit = current
    if policy.max > current:  # how many placement could hold, were all of them wanted
        wanted = spec.spec.model_copy(update={"replicas": policy.max})
        plan, _ = deployments.placed(ctx, db, spec.model_copy(update={"spec": wanted}))
        fit = max(current, len(plan.replicas))
    state = stored_state(db, spec.name)
    pending = None
    if state is not None and state["wanted"] is not None:
        pending = Pending(state["wanted"], state["since"])
    return decide(policy, current, loads, fit, pending, ctx.clock())


def _store(ctx: HubContext, name: str, decision: Decision) -> None:
    """Keep what the pass found, written only when it changed (a pass every few seconds
    writes nothing while the load holds still)."""
    pending = decision.pending
    values = (
        decision.load,
        int(decision.complete),
        decision.desired,
        None if pending is None else pending.wanted,
        None if pending is None else pending.since,
    )

    def op(db: sqlite_utils.Database) -> None:
        state = stored_state(db, name)
        if state is not None and tuple(state[c] for c in _COLUMNS) == values:
            return
        if db.execute("SELECT 1 FROM deployments WHERE name = ?", [name]).fetchone() is None:
            return  # deleted meanwhile
        db.execute(
            "INSERT INTO deployment_autoscale (deployment, load, complete, desired, wanted, "
            "since, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(deployment) DO UPDATE "
            "SET load = excluded.load, complete = excluded.complete, desired = "
            "excluded.desired, wanted = excluded.wanted, since = excluded.since, "
            "updated_at = excluded.updated_at",
            [name, *values, ctx.clock()],
        )

    ctx.store.write(op)


def _forget(ctx: HubContext, names: list[str]) -> None:
    marks = ",".join("?" * len(names))
    ctx.store.write(
        lambda db: db.execute(
            f"DELETE FROM deployment_autoscale WHERE deployment IN ({marks})", names
        )
    )


def autoscale(ctx: HubContext) -> str | None:
    """One pass over every autoscaled deployment; says what it scaled."""
    decided: list[tuple[DeploymentSpec, Decision]] = []
    with ctx.store.snapshot() as db:
        names = [r[0] for r in db.execute("SELECT name FROM deployments ORDER BY name")]
        remembered = {r[0] for r in db.execute("SELECT deployment FROM deployment_autoscale")}
        for name in names:
            try:
                spec = specs.current(ctx, db, name)
                decision = _decision(ctx, db, spec)
            except Exception:  # one broken deployment never stops the others
                log.exception("cannot autoscale %s", name)
                remembered.discard(name)
                continue
            if decision is not None:
                decided.append((spec, decision))
                remembered.discard(name)
    if remembered:  # no longer autoscaled: a later autoscale starts with no old since-when
        _forget(ctx, sorted(remembered))
    scaled = []
    for spec, decision in decided:
        if decision.scale_to is not None:
            before, after = spec.spec.replicas, decision.scale_to
            detail = {"from": before, "to": after, "load": decision.load}
            if deployments.rescale(ctx, spec, after, ACTOR, detail) is None:
                # Changed meanwhile, or refused: decide afresh, the delay counted again.
                decision = Decision(decision.load, decision.complete, decision.desired,
                                    Pending(after, ctx.clock()), None)  # fmt: skip
            else:
                scaled.append(f"{spec.name}: {before} -> {after} replicas (load {decision.load})")
        _store(ctx, spec.name, decision)
    return "; ".join(scaled) or None
