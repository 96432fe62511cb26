"""The hub's inventory: Ansible inventories in, Ansible inventories out, hosts and sites listed."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from aiorch.errors import NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.services import agents, audit
from aiorch.inventory import (
    Inventory,
    InventoryGroup,
    InventoryHost,
    parse_inventory,
    render_inventory,
)
from edge_agent.contract.facts import stored_facts


def import_inventory(ctx: HubContext, content: str, filename: str, actor: str) -> dict[str, Any]:
    """Merge an inventory into the hub in one transaction: all of it, or (on error) none of it."""
    inv = parse_inventory(content, filename)
    now = ctx.clock()

    def op(db: sqlite_utils.Database) -> dict[str, Any]:
        for group in inv.groups.values():
            db.table("inventory_groups").upsert(
                {
                    "name": group.name,
                    "vars": json.dumps(group.vars, sort_keys=True),
                    "children": json.dumps(sorted(group.children)),
                },
                pk="name",
            )
        created = 0
        for host in inv.hosts.values():
            fields = {
                "site": host.site,
                "role": host.role,
                "region": host.region,
                "labels": json.dumps(host.labels, sort_keys=True),
                "vars": json.dumps(host.vars, sort_keys=True),
                "groups": json.dumps(sorted(host.groups)),
                "updated_at": now,
            }
            if db.execute("SELECT 1 FROM hosts WHERE name = ?", [host.name]).fetchone():
                db.table("hosts").update(host.name, fields)
            else:
                db.table("hosts").insert({"name": host.name, **fields, "created_at": now})
                created += 1
        for site, region in sorted({(h.site, h.region) for h in inv.hosts.values() if h.site}):
            db.execute(
                "INSERT INTO sites (name, region, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET region = COALESCE(excluded.region, region)",
                [site, region, now],
            )
        summary = {
            "hosts": len(inv.hosts),
            "hosts_created": created,
            "groups": len(inv.groups),
            "filename": filename,
        }
        audit.record(db, actor, "inventory.import", f"inventory:{filename}", summary, ts=now)
        return summary

    return ctx.store.write(op)


def _stored_inventory(db: sqlite_utils.Database) -> Inventory:
    groups: dict[str, InventoryGroup] = {}
    for row in db.query("SELECT name, vars, children FROM inventory_groups ORDER BY name"):
        groups[row["name"]] = InventoryGroup(
            name=row["name"],
            vars=json.loads(row["vars"]),
            children=json.loads(row["children"]),
            hosts=[],
        )
    hosts: dict[str, InventoryHost] = {}
    for row in db.query("SELECT * FROM hosts WHERE status != 'retired' ORDER BY name"):
        host = InventoryHost(
            name=row["name"],
            vars=json.loads(row["vars"]),
            groups=json.loads(row["groups"]),
            site=row["site"],
            role=row["role"],
            region=row["region"],
            labels=json.loads(row["labels"]),
        )
        hosts[host.name] = host
        for group in host.groups:
            groups.setdefault(group, InventoryGroup(name=group, vars={}, children=[], hosts=[]))
            groups[group].hosts.append(host.name)
    return Inventory(hosts=hosts, groups=groups)


def export_inventory(ctx: HubContext) -> str:
    return render_inventory(_stored_inventory(ctx.store.read()))


def list_hosts(ctx: HubContext, site: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE h.site = ?", [site]) if site else ("", [])
    rows = ctx.store.read().query(
        "SELECT h.name, h.site, h.role, h.region, h.labels, h.groups, h.status, h.agent_id, "
        "a.last_seen, a.revoked_at, h.facts "
        f"FROM hosts h LEFT JOIN agents a ON a.id = h.agent_id {where} ORDER BY h.site, h.name",
        params,
    )
    out = []
    for row in rows:
        facts = stored_facts(row.pop("facts"))
        row = agents.host_row(row)
        agent_status = (
            agents.liveness(
                ctx,
                ctx.heartbeats.last_seen(row["agent_id"], row.pop("last_seen")),
                row.pop("revoked_at"),
            )
            if row["agent_id"]
            else "none"
        )
        gpus = len(facts.gpus) if facts else 0
        simulated = bool(facts and facts.gpus_simulated)
        out.append({**row, "agent": agent_status, "gpus": gpus, "gpus_simulated": simulated})
    return out


def get_host(ctx: HubContext, name: str) -> dict[str, Any]:
    rows = list(ctx.store.read().query("SELECT * FROM hosts WHERE name = ?", [name]))
    if not rows:
        raise NotFound(f"no host named {name}")
    return agents.host_row(rows[0])


def list_sites(ctx: HubContext) -> list[dict[str, Any]]:
    return list(
        ctx.store.read().query(
            "SELECT s.name, s.region, COUNT(h.name) AS hosts FROM sites s "
            "LEFT JOIN hosts h ON h.site = s.name GROUP BY s.name ORDER BY s.name"
        )
    )
