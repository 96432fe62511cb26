"""Drift: hosts whose real state no longer matches what the site playbook would make it.

The scheduled check runs the site playbook in check mode, one run per site. A host with
changed tasks in that run has drifted; a host the check could not finish on (a failed task,
unreachable, refused by pre-flight, the run stopped) is `unknown`, with the reason, because
nothing was learnt about it: it is never taken for clean, and drift found before stands. A
later clean check clears either.
Hosts a mutating run holds are left out of the check: their state is moving on purpose.

A check-mode run of the site playbook reports a hundred or more results per host; only the
changed and failed ones say anything about drift, so only those are stored.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from aiorch.errors import AiorchError
from aiorch.hub.context import HubContext, decode_json_fields
from aiorch.hub.services import runs, targets

ACTOR = "hub:drift"
DRIFTED = "drifted"  # the check found changes: placement puts no new replicas there
UNKNOWN = "unknown"  # the check could not finish: shown, but the host keeps serving
STORED_EVENTS = ("changed", "failed", "unreachable")
REASON_CHARS = 500


def check_drift(ctx: HubContext, timeout_per_site: float = 3600.0) -> dict[str, str]:
    """Scheduled job: one check-mode run per site, one after the other; {site: run id}."""
    started: dict[str, str] = {}
    for site in _sites(ctx):
        hosts = _idle_hosts(ctx, f"site={site}")
        if not hosts:
            continue
        playbook = ctx.settings.drift_playbook
        req = runs.RunRequest(
            playbook=playbook, limit=",".join(hosts), check=True, stored_events=STORED_EVENTS
        )
        try:
            run = runs.start_run(ctx, req, ACTOR, kind="drift", on_finish=record_drift)
        except AiorchError as exc:
            started[site] = f"not started: {exc}"
            continue
        started[site] = run["id"]
        runs.wait(run["id"], timeout_per_site)
    return started


def record_drift(db: sqlite_utils.Database, run: dict[str, Any]) -> str | None:
    """Finish hook of a drift run: per target host, drifted, unknown (and why) or clean."""
    changed: dict[str, list[str]] = {}
    failures: dict[str, str] = {}
    marks = ",".join("?" * len(STORED_EVENTS))
    for row in db.query(
        "SELECT host, task, status, res FROM run_events "
        f"WHERE run_id = ? AND status IN ({marks}) ORDER BY seq",
        [run["id"], *STORED_EVENTS],
    ):
        if row["status"] == "changed":
            changed.setdefault(row["host"], []).append(row["task"])
        else:
            failures.setdefault(row["host"], _failure(row))
    findings = []
    for host in run["hosts"]:
        counts = run["recap"].get(host)
        tasks = changed.get(host, [])
        if counts is not None and (counts["changed"] or tasks):
            # Changes seen are drift even when the check stopped later on that host.
            state, reason = DRIFTED, failures.get(host)
        elif counts is not None and not (counts["failed"] or counts["unreachable"]):
            db.execute("DELETE FROM drift WHERE host = ?", [host])
            continue
        else:
            state, reason = UNKNOWN, _unknown_reason(host, run, failures)
        findings.append(f"{host} {state}")
        reason = reason[:REASON_CHARS] if reason else None
        if state == UNKNOWN and _state(db, host) == DRIFTED:
            # Nothing new was learnt: the drift found before stands, with why it was not rechecked.
            db.execute("UPDATE drift SET reason = ? WHERE host = ?", [reason, host])
            continue
        db.table("drift").upsert(
            {
                "host": host,
                "run_id": run["id"],
                "detected_at": run["finished_at"],
                "state": state,
                "reason": reason,
                "changed_tasks": json.dumps(tasks),
            },
            pk="host",
        )
    return f"drift: {', '.join(findings)}" if findings else None


def _state(db: sqlite_utils.Database, host: str) -> str | None:
    row = db.execute("SELECT state FROM drift WHERE host = ?", [host]).fetchone()
    return None if row is None else str(row[0])


def _failure(row: dict[str, Any]) -> str:
    """`task: first line of Ansible's message` for a failed or unreachable result."""
    res = json.loads(row["res"] or "{}")
    lines = str(res.get("msg") or "").strip().splitlines()
    return f"{row['status']}: {row['task']}" + (f": {lines[0]}" if lines else "")


def _unknown_reason(host: str, run: dict[str, Any], failures: dict[str, str]) -> str:
    if host in failures:
        return failures[host]
    if host in run["preflight"]:
        return f"pre-flight: {run['preflight'][host]}"
    outcome = f"the check run ended {run['status']}"
    return f"{outcome}: {run['message']}" if run.get("message") else outcome


def findings(ctx: HubContext) -> list[dict[str, Any]]:
    """Each active host's last drift finding, drifted or unknown (clean hosts have none)."""
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
