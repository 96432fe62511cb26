"""Enrollment: operators mint short-lived tokens; agents trade one for their own credential.

A host enrolled again (a reinstalled box) gets its replicas back at once: its new agent's
desired state is published in the same transaction, not at the next apply."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from aiorch.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from aiorch.hub import credentials
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, replicas
from aiorch.inventory import host_name_problem


def create_token(ctx: HubContext, site: str, ttl_s: float, uses: int, actor: str) -> dict[str, Any]:
    minted = credentials.mint(credentials.ENROLLMENT_TOKEN)
    now = ctx.clock()
    row = {
        "id": minted.id,
        "secret_hash": minted.secret_hash,
        "site": site,
        "expires_at": now + ttl_s,
        "max_uses": uses,
        "uses": 0,
        "status": "active",
        "created_by": actor,
        "created_at": now,
        "revoked_at": None,
    }

    def op(db: sqlite_utils.Database) -> None:
        db.table("enrollment_tokens").insert(row)
        db.execute(
            "INSERT INTO sites (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING", [site, now]
        )
        detail = {"site": site, "ttl_s": ttl_s, "uses": uses}
        audit.record(db, actor, "enroll_token.create", f"enroll_token:{minted.id}", detail, ts=now)

    ctx.store.write(op)
    public = {k: v for k, v in row.items() if k != "secret_hash"}
    return {**public, "token": minted.token}


def list_tokens(ctx: HubContext) -> list[dict[str, Any]]:
    return list(
        ctx.store.read().query(
            "SELECT id, site, expires_at, max_uses, uses, status, created_by, created_at "
            "FROM enrollment_tokens ORDER BY created_at"
        )
    )


def revoke_token(ctx: HubContext, token_id: str, actor: str) -> None:
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> None:
        cur = db.execute(
            "UPDATE enrollment_tokens SET status = 'revoked', revoked_at = ? "
            "WHERE id = ? AND status != 'revoked'",
            [now, token_id],
        )
        if cur.rowcount == 0:
            raise NotFound(f"no enrollment token with id {token_id} to revoke")
        audit.record(db, actor, "enroll_token.revoke", f"enroll_token:{token_id}", ts=now)

    ctx.store.write(op)


def expire_tokens(ctx: HubContext) -> int:
    """Scheduled job: mark tokens past their expiry; returns how many changed."""
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> int:
        cur = db.execute(
            "UPDATE enrollment_tokens SET status = 'expired' "
            "WHERE status = 'active' AND expires_at <= ?",
            [now],
        )
        return cur.rowcount

    return ctx.store.write(op)


def _refusal(
    row: dict[str, Any] | None, presented: credentials.Presented, now: float
) -> str | None:
    if row is None or not credentials.matches(presented, row["secret_hash"]):
        return "unknown enrollment token"
    if row["status"] == "revoked":
        return "enrollment token has been revoked"
    if row["status"] == "expired" or row["expires_at"] <= now:
        return "enrollment token has expired"
    if row["uses"] >= row["max_uses"]:
        return f"enrollment token is used up ({row['uses']} of {row['max_uses']} uses)"
    return None


def enroll(
    ctx: HubContext, token: str, facts: dict[str, Any], agent_version: str
) -> dict[str, Any]:
    """Spend one use of `token`, register the host, and mint the agent's own credential."""
    presented = credentials.parse(token)
    if presented is None or presented.kind != credentials.ENROLLMENT_TOKEN:
        raise Unauthorized("unknown enrollment token")
    hostname = facts.get("hostname")
    if not isinstance(hostname, str) or not hostname.strip():
        raise InvalidInput("facts.hostname is required to enroll")
    problem = host_name_problem(hostname)
    if problem is not None:
        raise InvalidInput(f"facts.hostname {hostname[:64]!r} {problem}")
    minted = credentials.mint(credentials.AGENT_CREDENTIAL)
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> dict[str, Any]:
        rows = list(db.query("SELECT * FROM enrollment_tokens WHERE id = ?", [presented.id]))
        row = rows[0] if rows else None
        refusal = _refusal(row, presented, now)
        if refusal:
            raise Unauthorized(refusal) if refusal.startswith("unknown") else Forbidden(refusal)
        assert row is not None
        site = row["site"]
        hosts = list(db.query("SELECT site, agent_id FROM hosts WHERE name = ?", [hostname]))
        if hosts and hosts[0]["site"] not in (None, site):
            raise Forbidden(
                f"host {hostname} belongs to site {hosts[0]['site']}, token is for site {site}"
            )
        db.execute("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?", [row["id"]])
        previous = hosts[0]["agent_id"] if hosts else None
        if previous:
            db.execute("UPDATE agents SET revoked_at = ? WHERE id = ?", [now, previous])
        db.table("agents").insert(
            {
                "id": minted.id,
                "secret_hash": minted.secret_hash,
                "host_name": hostname,
                "site": site,
                "enrolled_at": now,
                "enrollment_token_id": row["id"],
                "status": "online",
                "last_seen": now,
                "agent_version": agent_version,
                "applied_revision": 0,
            }
        )
        facts_json = json.dumps(facts, sort_keys=True)
        if hosts:
            db.execute(
                "UPDATE hosts SET site = ?, agent_id = ?, facts = ?, updated_at = ? WHERE name = ?",
                [site, minted.id, facts_json, now, hostname],
            )
        else:
            db.table("hosts").insert(
                {
                    "name": hostname,
                    "site": site,
                    "labels": json.dumps({"site": site}),
                    "groups": json.dumps([site]),
                    "facts": facts_json,
                    "agent_id": minted.id,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        detail = {"host": hostname, "site": site, "enrollment_token": row["id"]}
        actor = f"agent:{minted.id}"
        if previous:
            detail["replaces_agent"] = previous
        audit.record(db, actor, "agent.enroll", f"agent:{minted.id}", detail, ts=now)
        placed = db.execute(
            "SELECT 1 FROM deployment_replicas WHERE host = ? LIMIT 1", [hostname]
        ).fetchone()
        if previous and placed:
            # The new credential's desired state: the host's replicas, as the old one had.
            replicas.publish(ctx, db, {hostname}, actor)
        return {"agent_id": minted.id, "site": site, "host": hostname}

    result = ctx.store.write(op)
    return {
        **result,
        "credential": minted.token,
        "poll_interval_s": ctx.settings.poll_interval_s,
    }
