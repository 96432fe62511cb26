"""Retiring a host: decommission it with a playbook run, then revoke its agent's credential
and mark it `retired`. Its history (runs, telemetry, audit) stays until the retention jobs
age it out; it leaves the inventory that runs and exports use, and `/metrics` at once.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import sqlite_utils

from aiorch.errors import Conflict, InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, inventory, runs

WIPE_CONFIRMATION = "yes-wipe-data"


def retire_host(
    ctx: HubContext,
    name: str,
    actor: str,
    *,
    wipe: bool = False,
    confirm: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Start the decommission run for `name`; the host is retired when it succeeds (or,
    with `force`, whatever its outcome: a dead box must be retirable too)."""
    host = inventory.get_host(ctx, name)
    if host["status"] == "retired":
        raise Conflict(f"host {name} is already retired")
    if wipe and confirm != WIPE_CONFIRMATION:
        raise InvalidInput(f"wiping data needs confirm={WIPE_CONFIRMATION!r}")
    extravars: dict[str, Any] = {}
    if wipe:
        extravars = {
            "aiorch_decommission_wipe_devices": True,
            "aiorch_decommission_confirm": WIPE_CONFIRMATION,
        }
    req = runs.RunRequest(playbook=ctx.settings.retire_playbook, limit=name, extravars=extravars)
    hook = partial(_retire, ctx, name=name, actor=actor, wipe=wipe, force=force)
    return runs.start_run(ctx, req, actor, kind="retire", on_finish=hook)


def _retire(
    ctx: HubContext,
    db: sqlite_utils.Database,
    run: dict[str, Any],
    *,
    name: str,
    actor: str,
    wipe: bool,
    force: bool,
) -> str:
    if run["status"] != "successful" and not force:
        return f"{name} not retired: the decommission run did not succeed (force retires anyway)"
    now = run["finished_at"]
    agent_ids = [
        row[0]
        for row in db.execute(
            "SELECT id FROM agents WHERE revoked_at IS NULL AND "
            "(host_name = ? OR id = (SELECT agent_id FROM hosts WHERE name = ?))",
            [name, name],
        )
    ]
    db.conn.executemany(
        "UPDATE agents SET revoked_at = ? WHERE id = ?", [(now, a) for a in agent_ids]
    )
    revoked = len(agent_ids)
    ctx.latest.forget_agents(agent_ids)  # `/metrics` stops showing the host at once
    db.execute("UPDATE hosts SET status = 'retired', updated_at = ? WHERE name = ?", [now, name])
    detail = {"run": run["id"], "agents_revoked": revoked, "wipe": wipe, "forced": force}
    audit.record(db, actor, "host.retire", f"host:{name}", detail, ts=now)
    return f"{name} retired; {revoked} agent credential(s) revoked"
