"""Agents: check-ins (heartbeat plus desired state), listing, desired state, liveness."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from aiorch.deploy.host_paths import refuse_outside
from aiorch.errors import InvalidInput, NotFound
from aiorch.hub.context import HubContext, decode_json_fields
from aiorch.hub.schemas import CheckinRequest
from aiorch.hub.sealing import HIDDEN, seal_scope
from aiorch.hub.services import agent_power, audit, job_reports
from aiorch.hub.services.auth import Principal
from aiorch.hub.services.heartbeats import Heartbeat
from aiorch.hub.services.projects import allowed_host_paths
from edge_agent.contract.job import runnable_entries
from edge_agent.contract.workload import parse_workloads

EMPTY_DESIRED: dict[str, Any] = {"workloads": []}


@dataclass(frozen=True)
class CheckinAnswer:
    revision: int
    document: dict[str, Any] | None  # None when the agent already has `revision`


def etag(revision: int) -> str:
    return f'"{revision}"'


def _desired_row(db: sqlite_utils.Database, agent_id: str) -> tuple[int, str | None]:
    row = db.execute(
        "SELECT revision, document FROM desired_states WHERE agent_id = ?", [agent_id]
    ).fetchone()
    return (row[0], row[1]) if row else (0, None)


async def checkin(
    ctx: HubContext, agent_id: str, req: CheckinRequest, if_none_match: str | None
) -> CheckinAnswer:
    """Record the heartbeat (coalesced) and answer with the desired state if it changed."""
    now = ctx.clock()
    report = req.report.model_dump_json() if req.report is not None else None
    beat = Heartbeat(
        now, req.agent_version, req.uptime_s, req.facts_hash, req.applied_revision, report
    )
    ctx.heartbeats.record(agent_id, beat)
    if req.report is not None and req.report.jobs:
        await job_reports.ingest(ctx, agent_id, req.report.jobs)
    if req.report is not None and req.report.power is not None:
        await agent_power.ingest(ctx, agent_id, req.report.power)
    if req.facts is not None:
        facts = json.dumps(req.facts, sort_keys=True)
        await ctx.store.awrite(
            lambda db: db.execute(
                "UPDATE hosts SET facts = ?, updated_at = ? WHERE agent_id = ?",
                [facts, now, agent_id],
            )
        )
    revision, document = _desired_row(ctx.store.read(), agent_id)
    if if_none_match is not None and if_none_match.strip() == etag(revision):
        return CheckinAnswer(revision, None)
    if document is None:
        return CheckinAnswer(revision, dict(EMPTY_DESIRED))
    return CheckinAnswer(revision, _opened(ctx, json.loads(document)))


def _opened(ctx: HubContext, document: dict[str, Any]) -> dict[str, Any]:
    """The desired state as its agent needs it: workloads' sealed secret values opened, each
    only where it was sealed for (they stay sealed in the store)."""
    for entry in runnable_entries(document):
        if entry.get("secret_env"):
            # Sealed for the deployment, or for the job (a scope no deployment can have).
            scope = (
                str(entry["deployment"])
                if "deployment" in entry
                else seal_scope(str(entry.get("job")))
            )
            entry["secret_env"] = ctx.sealer.unseal_env(
                entry["secret_env"], str(entry.get("project")), scope
            )
    return document


def get_desired(
    ctx: HubContext, agent_id: str, principal: Principal | None = None
) -> dict[str, Any]:
    """The stored desired state; sealed values are shown as such to global admins only
    (sealing is deterministic, so the blobs would tell others which workloads share one)."""
    db = ctx.store.read()
    _require_agent_exists(db, agent_id)
    revision, text = _desired_row(db, agent_id)
    document = json.loads(text) if text else dict(EMPTY_DESIRED)
    if principal is None or not principal.is_global_admin:
        for entry in runnable_entries(document):
            if isinstance(entry.get("secret_env"), dict):
                entry["secret_env"] = {name: HIDDEN for name in entry["secret_env"]}
    return {"agent_id": agent_id, "revision": revision, "document": document}


def write_desired(
    db: sqlite_utils.Database, agent_id: str, document: dict[str, Any], actor: str, now: float
) -> int:
    """Replace an agent's desired state inside the caller's transaction; the revision moves
    only when the document changes. Returns the revision now in force."""
    text = json.dumps(document, sort_keys=True)
    revision, current = _desired_row(db, agent_id)
    if current == text:
        return revision
    db.table("desired_states").upsert(
        {"agent_id": agent_id, "revision": revision + 1, "document": text, "updated_at": now},
        pk="agent_id",
    )
    audit.record(db, actor, "agent.desired.set", f"agent:{agent_id}", {"revision": revision + 1})
    return revision + 1


def set_desired(
    ctx: HubContext, agent_id: str, document: dict[str, Any], actor: str
) -> dict[str, Any]:
    """A hand-written desired state: one its agent would run all of (422 otherwise), with no
    secrets (those come only from deployments, sealed where they belong) and host paths its
    projects' policies allow (403)."""
    _refuse_hand_written(ctx, document)
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> int:
        _require_agent_exists(db, agent_id)
        return write_desired(db, agent_id, document, actor, now)

    return {"agent_id": agent_id, "revision": ctx.store.write(op), "document": document}


def _refuse_hand_written(ctx: HubContext, document: dict[str, Any]) -> None:
    if "power" in document:
        raise InvalidInput(
            "document.power: cannot be written by hand; use aiorch machines power (audited)"
        )
    entries = document.get("workloads", [])
    if not isinstance(entries, list):
        raise InvalidInput("document.workloads: must be a list")
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise InvalidInput(f"document.workloads[{position}]: must be an object with an id")
        if entry.get("secret_env"):
            raise InvalidInput(
                f"workload {entry['id']}: secret_env cannot be written by hand; "
                "give it in a deployment's secretEnv"
            )
    workloads, rejected = parse_workloads(document)
    if rejected:
        wid, why = next(iter(rejected.items()))
        raise InvalidInput(f"workload {wid}: an agent would refuse it ({why.reason})")
    db = ctx.store.read()
    for w in workloads:
        volumes = [(f"workload {w.id} volumes[{i}]", v.host_path) for i, v in enumerate(w.volumes)]
        refuse_outside(w.project, allowed_host_paths(db, w.project), volumes)


def _require_agent_exists(db: sqlite_utils.Database, agent_id: str) -> None:
    if db.execute("SELECT 1 FROM agents WHERE id = ?", [agent_id]).fetchone() is None:
        raise NotFound(f"no agent with id {agent_id}")


def liveness(ctx: HubContext, last_seen: float | None, revoked_at: float | None) -> str:
    if revoked_at is not None:
        return "revoked"
    if last_seen is None or ctx.clock() - last_seen > ctx.settings.offline_after_s:
        return "offline"
    return "online"


def host_agent_status(
    ctx: HubContext, agent_id: str | None, last_seen: float | None, revoked_at: float | None
) -> str:
    """A host's agent as people see it: online, offline or revoked, or "none" where no agent
    has enrolled (a check-in not yet flushed to the store counts)."""
    if not agent_id:
        return "none"
    return liveness(ctx, ctx.heartbeats.last_seen(agent_id, last_seen), revoked_at)


def list_agents(ctx: HubContext) -> list[dict[str, Any]]:
    stored = ctx.store.read().query(
        "SELECT id, host_name, site, enrolled_at, last_seen, agent_version, uptime_s, "
        "facts_hash, applied_revision, revoked_at, "
        "COALESCE((SELECT revision FROM desired_states d WHERE d.agent_id = agents.id), 0) "
        "AS desired_revision FROM agents ORDER BY host_name, enrolled_at"
    )
    rows = [ctx.heartbeats.overlay(r) for r in stored]
    return [{**r, "status": liveness(ctx, r["last_seen"], r["revoked_at"])} for r in rows]


def get_agent(ctx: HubContext, agent_id: str) -> dict[str, Any]:
    rows = [r for r in list_agents(ctx) if r["id"] == agent_id]
    if not rows:
        raise NotFound(f"no agent with id {agent_id}")
    return rows[0]


def mark_offline(ctx: HubContext) -> list[str]:
    """Scheduled job: persist online->offline transitions and audit each one."""
    ctx.heartbeats.flush(ctx.store)
    now = ctx.clock()
    cutoff = now - ctx.settings.offline_after_s

    def op(db: sqlite_utils.Database) -> list[str]:
        ids = [
            r[0]
            for r in db.execute(
                "SELECT id FROM agents WHERE status = 'online' AND revoked_at IS NULL "
                "AND (last_seen IS NULL OR last_seen < ?)",
                [cutoff],
            ).fetchall()
        ]
        for agent_id in ids:
            db.execute("UPDATE agents SET status = 'offline' WHERE id = ?", [agent_id])
            audit.record(db, "hub", "agent.offline", f"agent:{agent_id}", ts=now)
        return ids

    return ctx.store.write(op)


def host_row(row: dict[str, Any]) -> dict[str, Any]:
    return decode_json_fields(row, ["labels", "vars", "groups", "facts"])
