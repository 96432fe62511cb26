"""Enrollment: operators mint short-lived tokens; agents trade one and a CSR for a certificate.

The token the operator hands over carries the pin of the hub's CA, so the agent can check it
talks to its hub before it sends anything. The hub ignores every name in the CSR and issues the
certificate for the agent's own new id. A token enrolls a host name that no live agent holds,
or replaces the agent of the one host it was made for (`--host NAME --replace`): a site token
cannot take over another box and receive its desired state.

A host enrolled again (a reinstalled box) gets its replicas back at once: its new agent's
desired state is published in the same transaction, not at the next apply."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from aiorch.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from aiorch.hub import credentials
from aiorch.hub.context import HubContext
from aiorch.hub.pki.authority import parse_csr
from aiorch.hub.services import agent_identity, audit, machine_configure, replicas
from aiorch.inventory import host_name_problem
from edge_agent.contract.identity import TOKEN_PIN_SEPARATOR, join_token


def create_token(
    ctx: HubContext,
    site: str,
    ttl_s: float,
    uses: int,
    actor: str,
    host: str | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    pin = ctx.authority.token_pin  # opening the CA writes: not inside the write below
    return ctx.store.write(
        lambda db: create_token_in(db, ctx, pin, site, ttl_s, uses, actor, host, replace)
    )


def create_token_in(
    db: sqlite_utils.Database,
    ctx: HubContext,
    pin: str,
    site: str,
    ttl_s: float,
    uses: int,
    actor: str,
    host: str | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Mint and store a token inside the caller's write (a provisioned machine's first-boot
    token is made in the same write that hands it to the ramdisk); `pin` is the CA's."""
    if replace and not host:
        raise InvalidInput("replace needs host: the one host whose agent the token replaces")
    if host is not None and (problem := host_name_problem(host)):
        raise InvalidInput(f"host {host[:64]!r} {problem}")
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
        "host": host,
        "replace_host": int(replace),
    }
    db.table("enrollment_tokens").insert(row)
    db.execute(
        "INSERT INTO sites (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING", [site, now]
    )
    detail = {"site": site, "ttl_s": ttl_s, "uses": uses, "host": host, "replace": replace}
    audit.record(db, actor, "enroll_token.create", f"enroll_token:{minted.id}", detail, ts=now)
    public = {k: v for k, v in row.items() if k not in ("secret_hash", "replace_host")}
    joined = join_token(minted.token, pin)
    return {**public, "replace": replace, "token": joined, "secret": minted.token, "ca_pin": pin}


def list_tokens(ctx: HubContext) -> list[dict[str, Any]]:
    return list(
        ctx.store.read().query(
            "SELECT id, site, host, replace_host AS replace, expires_at, max_uses, uses, status, "
            "created_by, created_at FROM enrollment_tokens ORDER BY created_at"
        )
    )


def revoke_token(ctx: HubContext, token_id: str, actor: str) -> None:
    def op(db: sqlite_utils.Database) -> None:
        if not revoke_token_in(db, ctx, token_id, actor):
            raise NotFound(f"no enrollment token with id {token_id} to revoke")

    ctx.store.write(op)


def revoke_token_in(db: sqlite_utils.Database, ctx: HubContext, token_id: str, actor: str) -> bool:
    """Revoke inside the caller's write; False when there was no live token of that id."""
    now = ctx.clock()
    cur = db.execute(
        "UPDATE enrollment_tokens SET status = 'revoked', revoked_at = ? "
        "WHERE id = ? AND status != 'revoked'",
        [now, token_id],
    )
    if cur.rowcount:
        audit.record(db, actor, "enroll_token.revoke", f"enroll_token:{token_id}", ts=now)
    return bool(cur.rowcount)


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


def _takeover(row: dict[str, Any], host: dict[str, Any] | None, hostname: str) -> str | None:
    """Why this token may not enroll `hostname`, given the host's row, or None."""
    if row["host"] is not None and row["host"] != hostname:
        return f"this enrollment token is for host {row['host']}, not {hostname}"
    if host is None or host["agent_id"] is None or host["revoked_at"] is not None:
        return None
    if row["replace_host"] and row["host"] == hostname:
        return None
    return (
        f"host {hostname} is enrolled (agent {host['agent_id']}); to replace its agent, "
        f"enroll with a token from 'aiorch enroll-token create --host {hostname} --replace'"
    )


def enroll(
    ctx: HubContext, token: str, csr_pem: str, facts: dict[str, Any], agent_version: str
) -> dict[str, Any]:
    """Spend one use of `token`, register the host, and sign the agent's first certificate."""
    presented = credentials.parse(token.partition(TOKEN_PIN_SEPARATOR)[0])
    if presented is None or presented.kind != credentials.ENROLLMENT_TOKEN:
        raise Unauthorized("unknown enrollment token")
    hostname = facts.get("hostname")
    if not isinstance(hostname, str) or not hostname.strip():
        raise InvalidInput("facts.hostname is required to enroll")
    problem = host_name_problem(hostname)
    if problem is not None:
        raise InvalidInput(f"facts.hostname {hostname[:64]!r} {problem}")
    csr = parse_csr(csr_pem)
    agent_id = credentials.new_id()
    now = ctx.clock()
    issued = ctx.authority.issue_agent(agent_id, csr, now, ctx.settings.agent_cert_lifetime_s)

    def op(db: sqlite_utils.Database) -> dict[str, Any]:
        rows = list(db.query("SELECT * FROM enrollment_tokens WHERE id = ?", [presented.id]))
        row = rows[0] if rows else None
        refusal = _refusal(row, presented, now)
        if refusal:
            raise Unauthorized(refusal)
        assert row is not None
        site = row["site"]
        hosts = list(
            db.query(
                "SELECT h.site, h.agent_id, a.revoked_at FROM hosts h "
                "LEFT JOIN agents a ON a.id = h.agent_id WHERE h.name = ?",
                [hostname],
            )
        )
        host = hosts[0] if hosts else None
        if host and host["site"] not in (None, site):
            raise Forbidden(
                f"host {hostname} belongs to site {host['site']}, token is for site {site}"
            )
        refused = _takeover(row, host, hostname)
        if refused:
            raise (Forbidden if refused.startswith("this") else Conflict)(refused)
        db.execute("UPDATE enrollment_tokens SET uses = uses + 1 WHERE id = ?", [row["id"]])
        previous = host["agent_id"] if host else None
        if previous:
            db.execute(
                "UPDATE agents SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                [now, previous],
            )
            db.execute(
                "UPDATE agent_certs SET revoked_at = ? WHERE agent_id = ? AND revoked_at IS NULL",
                [now, previous],
            )
        db.table("agents").insert(
            {
                "id": agent_id,
                "secret_hash": "",
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
        agent_identity.record_cert(db, agent_id, issued, "enroll", now)
        facts_json = json.dumps(facts, sort_keys=True)
        if host:
            db.execute(
                "UPDATE hosts SET site = ?, agent_id = ?, facts = ?, updated_at = ? WHERE name = ?",
                [site, agent_id, facts_json, now, hostname],
            )
        else:
            db.table("hosts").insert(
                {
                    "name": hostname,
                    "site": site,
                    "labels": json.dumps({"site": site}),
                    "groups": json.dumps([site]),
                    "facts": facts_json,
                    "agent_id": agent_id,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        detail = {
            "host": hostname,
            "site": site,
            "enrollment_token": row["id"],
            "serial": issued.serial,
        }
        actor = f"agent:{agent_id}"
        if previous:
            detail["replaces_agent"] = previous
        audit.record(db, actor, "agent.enroll", f"agent:{agent_id}", detail, ts=now)
        placed = db.execute(
            "SELECT 1 FROM deployment_replicas WHERE host = ? LIMIT 1", [hostname]
        ).fetchone()
        if previous and placed:
            # The new agent's desired state: the host's replicas, as the old one had.
            replicas.publish(ctx, db, {hostname}, actor)
        configure = machine_configure.agent_enrolled(db, ctx, hostname, row["id"], actor, facts)
        return {"site": site, "host": hostname, "configure": configure}

    result = ctx.store.write(op)
    if result.pop("configure"):
        machine_configure.start(ctx, hostname)
    answer = agent_identity.issued_answer(ctx, agent_id, issued)
    return {**result, **answer, "poll_interval_s": ctx.settings.poll_interval_s}
