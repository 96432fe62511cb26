"""The hub's inventory: Ansible inventories in, Ansible inventories out, hosts and sites listed.

Vars named like secrets (services/redaction.py decides) are sealed at rest, each bound to its
host or group and its name; they are opened for a run's inventory file and for global admins,
and masked for everyone else. Vars that change how Ansible connects or escalates, and
templates, which the hub evaluates (aiorch/ansible/connection_vars.py), are set, changed or
removed by global admins only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlite_utils

from aiorch.ansible.connection_vars import reaching_vars
from aiorch.errors import Forbidden, NotFound
from aiorch.hub.context import HubContext
from aiorch.hub.sealing import inventory_binding, is_sealed
from aiorch.hub.services import agents, audit, gpu_acceptance
from aiorch.hub.services.auth import Principal
from aiorch.hub.services.redaction import (
    longest_first,
    map_secrets,
    mask_secrets,
    secret_values,
)
from aiorch.inventory import (
    Inventory,
    InventoryGroup,
    InventoryHost,
    parse_inventory,
    render_inventory,
)
from edge_agent.contract.facts import stored_facts

MIN_MASKED = 4  # characters: shorter secret-looking inventory texts are not masked in events


def import_inventory(
    ctx: HubContext, content: str, filename: str, principal: Principal
) -> dict[str, Any]:
    """Merge an inventory into the hub in one transaction: all of it, or (on error) none of it."""
    inv = parse_inventory(content, filename)
    now, actor = ctx.clock(), principal.actor

    def checked(db: sqlite_utils.Database, kind: str, name: str, new: dict[str, Any]) -> str:
        """`new` vars as stored, once `principal` may set them."""
        if not principal.is_global_admin:
            table = "hosts" if kind == "host" else "inventory_groups"
            row = db.execute(f"SELECT vars FROM {table} WHERE name = ?", [name]).fetchone()
            old = _opened(ctx, json.loads(row[0]), kind, name) if row else {}
            _refuse_reaching_changes(kind, name, old, new)
        return json.dumps(_sealed(ctx, new, kind, name), sort_keys=True)

    def op(db: sqlite_utils.Database) -> dict[str, Any]:
        for group in inv.groups.values():
            db.table("inventory_groups").upsert(
                {
                    "name": group.name,
                    "vars": checked(db, "group", group.name, group.vars),
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
                "vars": checked(db, "host", host.name, host.vars),
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


def _refuse_reaching_changes(
    kind: str, name: str, old: dict[str, Any], new: dict[str, Any]
) -> None:
    """Only a global admin adds, changes or removes a var that reaches past the playbooks."""
    changed = {var: new.get(var) for var in set(old) | set(new) if old.get(var) != new.get(var)}
    if refused := reaching_vars(changed):
        raise Forbidden(
            f"{kind} {name}: {', '.join(refused)}: only a global admin may set, change or remove "
            "vars that change how Ansible connects or escalates, or that hold templates "
            "({{ }}, {% %}) the hub would evaluate"
        )


def _sealed(ctx: HubContext, values: dict[str, Any], kind: str, owner: str) -> dict[str, Any]:
    def seal(path: tuple[str, ...], value: Any) -> str:
        return ctx.sealer.seal(json.dumps(value), inventory_binding(kind, owner, path))

    sealed: dict[str, Any] = map_secrets(values, seal)
    return sealed


def _opened(ctx: HubContext, values: dict[str, Any], kind: str, owner: str) -> dict[str, Any]:
    """Stored vars with their sealed values opened (a value stored before sealing existed is
    plain already, and is sealed the next time its host or group is imported)."""

    def unseal(path: tuple[str, ...], value: Any) -> Any:
        if not is_sealed(value):
            return value
        return json.loads(ctx.sealer.unseal(value, inventory_binding(kind, owner, path)))

    opened: dict[str, Any] = map_secrets(values, unseal)
    return opened


def stored_inventory(db: sqlite_utils.Database) -> Inventory:
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


def _reveals(principal: Principal | None) -> bool:
    return principal is not None and principal.is_global_admin


def _shown(
    ctx: HubContext, values: dict[str, Any], kind: str, owner: str, reveal: bool
) -> dict[str, Any]:
    """Stored vars with their secrets opened (`reveal`) or masked."""
    return _opened(ctx, values, kind, owner) if reveal else dict(mask_secrets(values))


def _revealed(ctx: HubContext, reveal: bool) -> Inventory:
    inv = stored_inventory(ctx.store.read())
    for host in inv.hosts.values():
        host.vars = _shown(ctx, host.vars, "host", host.name, reveal)
    for group in inv.groups.values():
        group.vars = _shown(ctx, group.vars, "group", group.name, reveal)
    return inv


def export_inventory(ctx: HubContext, principal: Principal | None = None) -> str:
    """The inventory as people see it: secrets in clear for global admins, masked otherwise."""
    return render_inventory(_revealed(ctx, _reveals(principal)))


def write_run_inventory(ctx: HubContext, path: Path) -> list[str]:
    """Write the inventory a run's ansible-playbook reads (into the run's private folder),
    secrets open; return those secret values, which the run keeps out of all it stores."""
    inv = _revealed(ctx, True)
    path.write_text(render_inventory(inv))
    held = [h.vars for h in inv.hosts.values()] + [g.vars for g in inv.groups.values()]
    # Texts only, and not the shortest: masking every `True` or `yes` would garble the output.
    return longest_first(
        value
        for values in held
        for value in secret_values(values, texts_only=True)
        if len(value) >= MIN_MASKED
    )


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
        agent_status = agents.host_agent_status(
            ctx, row["agent_id"], row.pop("last_seen"), row.pop("revoked_at")
        )
        gpus = len(facts.gpus) if facts else 0
        simulated = bool(facts and facts.gpus_simulated)
        release = facts.site_release if facts else None
        out.append(
            {
                **row,
                "agent": agent_status,
                "gpus": gpus,
                "gpus_simulated": simulated,
                "site_release": None if release is None else release.version,
                "models": list(facts.models) if facts else [],
            }
        )
    return out


def get_host(ctx: HubContext, name: str, principal: Principal | None = None) -> dict[str, Any]:
    """One host, with its latest GPU acceptance record (null: none); its secret-looking vars
    in clear for global admins only."""
    db = ctx.store.read()
    rows = list(db.query("SELECT * FROM hosts WHERE name = ?", [name]))
    if not rows:
        raise NotFound(f"no host named {name}")
    host = agents.host_row(rows[0])
    host["vars"] = _shown(ctx, host["vars"], "host", name, _reveals(principal))
    host["gpu_acceptance"] = gpu_acceptance.summary(db, name)
    return host


def list_sites(ctx: HubContext) -> list[dict[str, Any]]:
    return list(
        ctx.store.read().query(
            "SELECT s.name, s.region, COUNT(h.name) AS hosts FROM sites s "
            "LEFT JOIN hosts h ON h.site = s.name GROUP BY s.name ORDER BY s.name"
        )
    )
