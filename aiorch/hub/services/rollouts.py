"""Rollouts in the store: started by apply when a deployment's template changes, moved on by
the `rollouts-progress` job as waves turn healthy, paused, resumed and rolled back.

Every step runs in one writer transaction that switches replicas to a revision and rewrites
the desired state of their agents, so what the agents are told and what `rollout status`
shows never disagree. Each rollout steps in its own transaction: one that cannot step (a
stored spec that no longer validates, a missing revision) keeps the error as its reason and
is logged once, while the others go on. Steps are written to the audit log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

import sqlite_utils

from aiorch.deploy import HostView, Replica
from aiorch.deploy.rollout import (
    ACTIVE,
    FAILED,
    PAUSED,
    PROGRESSING,
    ROLLED_BACK,
    SUCCEEDED,
    SUPERSEDED,
    Progress,
    advance,
    plan_waves,
)
from aiorch.deploy.spec import spec_hash, with_template
from aiorch.errors import Conflict, NotFound, Unavailable
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, replicas, specs

HUB = "hub"  # the actor of the steps the hub takes on its own
CANNOT_STEP = "cannot step: "  # the reason of a progressing rollout whose last step failed

log = logging.getLogger("aiorch.hub.rollouts")


def begin(
    ctx: HubContext,
    db: sqlite_utils.Database,
    name: str,
    revision: int,
    hosts: Mapping[str, HostView],
    actor: str,
) -> None:
    """Start moving `name`'s replicas to `revision` (its first wave at once), superseding a
    rollout in progress. The caller publishes the desired state of the deployment's hosts."""
    now = ctx.clock()
    db.execute(
        "UPDATE rollouts SET state = ?, reason = ?, updated_at = ? "
        "WHERE deployment = ? AND state IN (?, ?)",
        [SUPERSEDED, f"replaced by a rollout to revision {revision}", now, name, *ACTIVE],
    )
    stable = db.execute(
        "SELECT stable_revision FROM deployments WHERE name = ?", [name]
    ).fetchone()[0]
    stale = [
        Replica(ordinal, host)
        for ordinal, host in db.execute(
            "SELECT ordinal, host FROM deployment_replicas WHERE deployment = ? AND revision != ?",
            [name, revision],
        )
    ]
    if not stale:  # nothing runs an older revision: this one is already everywhere
        db.execute("UPDATE deployments SET stable_revision = ? WHERE name = ?", [revision, name])
        return
    rollout = specs.current(ctx, db, name).spec.rollout
    waves = plan_waves(rollout, stale, hosts)
    db.execute(
        "INSERT INTO rollouts (deployment, from_revision, to_revision, strategy, waves, wave, "
        "state, wave_started_at, started_by, started_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
        [name, stable, revision, rollout.strategy, json.dumps(waves), PROGRESSING, now,
         actor, now, now],
    )  # fmt: skip
    detail = {"from_revision": stable, "to_revision": revision, "waves": waves}
    audit.record(db, actor, "rollout.start", f"deployment:{name}", detail, ts=now)
    _switch(db, name, waves[0], revision)


def _switch(db: sqlite_utils.Database, name: str, ordinals: list[int], revision: int) -> set[str]:
    """Give these replicas `revision`; returns their hosts (whose agents need telling)."""
    marks = ",".join("?" * len(ordinals))
    where = f"deployment = ? AND ordinal IN ({marks})"
    query = f"SELECT host FROM deployment_replicas WHERE {where}"
    hosts = {r[0] for r in db.execute(query, [name, *ordinals])}
    db.execute(
        f"UPDATE deployment_replicas SET revision = ? WHERE {where}", [revision, name, *ordinals]
    )
    return hosts


def progress(ctx: HubContext) -> str | None:
    """The scheduled step of every rollout in progress, each in its own transaction; a cheap
    read when there is none."""
    ids = [
        r[0]
        for r in ctx.store.read().execute(
            "SELECT id FROM rollouts WHERE state = ? ORDER BY id", [PROGRESSING]
        )
    ]
    said = []
    for rollout_id in ids:
        try:
            said.append(ctx.store.write(partial(_step_by_id, ctx, rollout_id)))
        except Unavailable:
            return "; ".join(filter(None, said)) or None  # the store is busy: next time
        except Exception as exc:
            _record_failure(ctx, rollout_id, exc)
    return "; ".join(filter(None, said)) or None


def _step_by_id(ctx: HubContext, rollout_id: int, db: sqlite_utils.Database) -> str:
    rows = list(
        db.query("SELECT * FROM rollouts WHERE id = ? AND state = ?", [rollout_id, PROGRESSING])
    )
    if not rows:  # paused, superseded or finished since the job looked
        return ""
    rollout = rows[0]
    if (rollout["reason"] or "").startswith(CANNOT_STEP):  # it steps again: clear the error
        _update(db, rollout_id, ctx.clock(), reason=None)
    return _step(ctx, db, rollout)


def _record_failure(ctx: HubContext, rollout_id: int, exc: Exception) -> None:
    """Keep the error as the rollout's reason (shown by `rollout status`); log it when new,
    so a rollout failing every second logs once, not every second."""
    reason = f"{CANNOT_STEP}{type(exc).__name__}: {exc}"[:1000]

    def op(db: sqlite_utils.Database) -> str | None:
        row = db.execute(
            "SELECT deployment, reason FROM rollouts WHERE id = ?", [rollout_id]
        ).fetchone()
        if row is None or row[1] == reason:
            return None
        _update(db, rollout_id, ctx.clock(), reason=reason)
        return str(row[0])

    try:
        deployment = ctx.store.write(op)
    except Exception:
        log.exception("rollout %s: %s; recording it failed too", rollout_id, reason)
        return
    if deployment is not None:
        log.error("rollout %s of %s %s", rollout_id, deployment, reason, exc_info=exc)


def _step(ctx: HubContext, db: sqlite_utils.Database, rollout: dict[str, Any]) -> str:
    now, name = ctx.clock(), rollout["deployment"]
    spec = specs.current(ctx, db, name)
    project = spec.metadata.project
    target = _template(db, name, rollout["to_revision"])
    plan = spec.spec.rollout
    waves: list[list[int]] = json.loads(rollout["waves"])
    state = Progress(
        waves=waves,
        wave=rollout["wave"],
        target_template=target,
        wave_started_at=rollout["wave_started_at"],
        healthy_since=rollout["healthy_since"],
        pause_s=plan.pause_seconds,
        deadline_s=plan.progress_deadline_seconds,
        offline_after_s=ctx.settings.offline_after_s,
    )
    observed = {o.ordinal: o for _, o in replicas.observe(ctx, db, name, project)}
    step = advance(state, observed, now)
    where = f"deployment:{name}"
    if step.action == "wait":
        if step.healthy_since != rollout["healthy_since"]:
            _update(db, rollout["id"], now, healthy_since=step.healthy_since)
        return ""
    if step.action == "next":
        wave = rollout["wave"] + 1
        _update(db, rollout["id"], now, wave=wave, wave_started_at=now, healthy_since=None)
        hosts = _switch(db, name, waves[wave], rollout["to_revision"])
        replicas.publish(ctx, db, hosts, HUB)
        audit.record(db, HUB, "rollout.wave", where, {"wave": wave + 1, "of": len(waves)}, ts=now)
        return f"{name}: wave {wave + 1}/{len(waves)} started"
    if step.action == "done":
        _update(db, rollout["id"], now, state=SUCCEEDED)
        db.execute(
            "UPDATE deployments SET stable_revision = ? WHERE name = ?",
            [rollout["to_revision"], name],
        )
        audit.record(db, HUB, "rollout.succeeded", where, {"revision": rollout["to_revision"]},
                     ts=now)  # fmt: skip
        return f"{name}: revision {rollout['to_revision']} rolled out"
    if plan.auto_rollback and rollout["from_revision"] != rollout["to_revision"]:
        roll_back(ctx, db, rollout, f"{step.reason}; rolled back automatically", HUB)
        return f"{name}: rolled back to revision {rollout['from_revision']} ({step.reason})"
    _update(db, rollout["id"], now, state=FAILED, reason=step.reason)
    audit.record(db, HUB, "rollout.failed", where, {"reason": step.reason}, ts=now)
    return f"{name}: rollout failed ({step.reason})"


def roll_back(
    ctx: HubContext, db: sqlite_utils.Database, rollout: dict[str, Any], reason: str, actor: str
) -> None:
    """Every replica back on the rollout's previous revision at once (it ran healthy before),
    and the deployment's template with it; its replica count and placement stay."""
    now, name, previous = ctx.clock(), rollout["deployment"], rollout["from_revision"]
    current = specs.current(ctx, db, name)
    restored = with_template(current, specs.revision(ctx, db, name, previous))
    db.execute(
        "UPDATE deployments SET spec = ?, spec_hash = ?, revision = ?, "
        "generation = generation + 1, updated_by = ?, updated_at = ? WHERE name = ?",
        [specs.to_store(ctx, restored), spec_hash(restored), previous, actor, now, name],
    )
    hosts = {
        r[0]
        for r in db.execute(
            "SELECT host FROM deployment_replicas WHERE deployment = ? AND revision != ?",
            [name, previous],
        )
    }
    db.execute("UPDATE deployment_replicas SET revision = ? WHERE deployment = ?", [previous, name])
    replicas.publish(ctx, db, hosts, actor)
    _update(db, rollout["id"], now, state=ROLLED_BACK, reason=reason)
    detail = {"to_revision": previous, "reason": reason}
    audit.record(db, actor, "rollout.rolled_back", f"deployment:{name}", detail, ts=now)


def _template(db: sqlite_utils.Database, name: str, revision: int) -> str:
    return str(
        db.execute(
            "SELECT template_hash FROM deployment_revisions WHERE deployment = ? AND revision = ?",
            [name, revision],
        ).fetchone()[0]
    )


def _update(db: sqlite_utils.Database, rollout_id: int, now: float, **values: Any) -> None:
    db.table("rollouts").update(rollout_id, {**values, "updated_at": now})


def latest(db: sqlite_utils.Database, name: str) -> dict[str, Any] | None:
    rows = list(
        db.query("SELECT * FROM rollouts WHERE deployment = ? ORDER BY id DESC LIMIT 1", [name])
    )
    return rows[0] if rows else None


def _require_active(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    rollout = active(db, name)
    if rollout is None:
        if db.execute("SELECT 1 FROM deployments WHERE name = ?", [name]).fetchone() is None:
            raise NotFound(f"no deployment named {name}")
        raise Conflict(f"deployment {name} has no rollout in progress")
    return rollout


def pause(ctx: HubContext, name: str, actor: str) -> dict[str, Any]:
    """Hold the rollout after its current wave; replicas already moved stay moved."""
    return _set_state(ctx, name, actor, PROGRESSING, PAUSED, "rollout.pause")


def resume(ctx: HubContext, name: str, actor: str) -> dict[str, Any]:
    """Go on from the current wave; its progress deadline starts afresh."""
    return _set_state(ctx, name, actor, PAUSED, PROGRESSING, "rollout.resume")


def _set_state(
    ctx: HubContext, name: str, actor: str, before: str, after: str, action: str
) -> dict[str, Any]:
    def op(db: sqlite_utils.Database) -> None:
        rollout = _require_active(db, name)
        if rollout["state"] != before:
            raise Conflict(f"the rollout of {name} is {rollout['state']}, not {before}")
        now = ctx.clock()
        extra = {"wave_started_at": now} if after == PROGRESSING else {}
        _update(db, rollout["id"], now, state=after, **extra)
        audit.record(db, actor, action, f"deployment:{name}", {"rollout": rollout["id"]}, ts=now)

    ctx.store.write(op)
    return status(ctx, name)


def active(db: sqlite_utils.Database, name: str) -> dict[str, Any] | None:
    """The rollout in progress or paused, if any."""
    rollout = latest(db, name)
    return rollout if rollout is not None and rollout["state"] in ACTIVE else None


def status(ctx: HubContext, name: str) -> dict[str, Any]:
    """The deployment's revisions, its latest rollout, and every replica as last reported."""
    db = ctx.store.read()
    row = db.execute(
        "SELECT project, revision, stable_revision FROM deployments WHERE name = ?", [name]
    ).fetchone()
    if row is None:
        raise NotFound(f"no deployment named {name}")
    project, revision, stable = row
    rollout = latest(db, name)
    template = _template(db, name, revision)
    return {
        "name": name,
        "revision": revision,
        "stable_revision": stable,
        "rollout": None if rollout is None else _rollout_view(rollout),
        "replicas": [
            {
                "replica": o.ordinal,
                "host": o.host,
                "revision": replica_revision,
                "online": o.online,
                "updated": o.on(template),  # its agent runs the deployment's revision
                "state": o.state or "pending",
                "reason": o.reason,
            }
            for replica_revision, o in replicas.observe(ctx, db, name, project)
        ],
    }


def _rollout_view(rollout: dict[str, Any]) -> dict[str, Any]:
    waves = json.loads(rollout["waves"])
    return {
        "id": rollout["id"],
        "from_revision": rollout["from_revision"],
        "to_revision": rollout["to_revision"],
        "strategy": rollout["strategy"],
        "state": rollout["state"],
        "reason": rollout["reason"],
        "wave": rollout["wave"] + 1,
        "waves": waves,
        "started_by": rollout["started_by"],
        "started_at": rollout["started_at"],
        "updated_at": rollout["updated_at"],
    }
