"""Drift: hosts whose real state no longer matches what the site playbook would make it.

The scheduled check runs the site playbook in check mode, one run per site, and a host with
changed tasks in that run has drifted. A later clean check clears it. Hosts a mutating run
holds are left out of the check: their state is moving on purpose.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from aiorch.errors import AiorchError
from aiorch.hub.context import HubContext, decode_json_fields
from aiorch.hub.services import runs, targets

ACTOR = "hub:drift"


def check_drift(ctx: HubContext, timeout_per_site: float = 3600.0) -> dict[str, str]:
    """Scheduled job: one check-mode run per site, one after the other; {site: run id}."""
    started: dict[str, str] = {}
    for site in _sites(ctx):
        hosts = _idle_hosts(ctx, f"site={site}")
        if not hosts:
            continue
        playbook = ctx.settings.drift_playbook
        req = runs.RunRequest(playbook=playbook, limit=",".join(hosts), check=True)
        try:
            run = runs.start_run(ctx, req, ACTOR, kind="drift", on_finish=record_drift)
        except AiorchError as exc:
            started[site] = f"not started: {exc}"
            continue
        started[site] = run["id"]
        runs.wait(run["id"], timeout_per_site)
    return started


def record_drift(db: sqlite_utils.Database, run: dict[str, Any]) -> str | None:
    """Finish hook of a drift run: hosts with changes have drifted, hosts without have not."""
    changed: dict[str, list[str]] = {}
    for row in db.query(
        "SELECT host, task FROM run_events WHERE run_id = ? AND status = 'changed' ORDER BY seq",
        [run["id"]],
    ):
        changed.setdefault(row["host"], []).append(row["task"])
    for host, counts in run["recap"].items():
        if counts["failed"] or counts["unreachable"]:
            continue  # nothing learnt about this host
        if counts["changed"]:
            db.table("drift").upsert(
                {
                    "host": host,
                    "run_id": run["id"],
                    "detected_at": run["finished_at"],
                    "changed_tasks": json.dumps(changed.get(host, [])),
                },
                pk="host",
            )
        else:
            db.execute("DELETE FROM drift WHERE host = ?", [host])
    drifted = sorted(h for h, c in run["recap"].items() if c["changed"])
    return f"drifted: {', '.join(drifted)}" if drifted else None


def drifted_hosts(ctx: HubContext) -> list[dict[str, Any]]:
    rows = ctx.store.read().query(
        "SELECT d.* FROM drift d JOIN hosts h ON h.name = d.host "
        "WHERE h.status != 'retired' ORDER BY d.host"
    )
    return [decode_json_fields(row, ["changed_tasks"]) for row in rows]


def _sites(ctx: HubContext) -> list[str]:
    rows = ctx.store.read().execute(
        "SELECT DISTINCT site FROM hosts WHERE status != 'retired' AND site IS NOT NULL "
        "ORDER BY site"
    )
    return [row[0] for row in rows]


def _idle_hosts(ctx: HubContext, limit: str) -> list[str]:
    db = ctx.store.read()
    locked = {row[0] for row in db.execute("SELECT host FROM host_locks")}
    return [host for host in targets.resolve_limit(db, limit) if host not in locked]
