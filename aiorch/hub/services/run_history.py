"""Runs as stored: one run, the latest runs, and a run's events, read concurrently with the
writer."""

from __future__ import annotations

from typing import Any

from aiorch.errors import NotFound
from aiorch.hub.context import HubContext, decode_json_fields

ACTIVE_STATUSES = ("queued", "running")
_JSON_FIELDS = ("hosts", "extravars", "recap", "preflight")


def decode(row: dict[str, Any]) -> dict[str, Any]:
    run = decode_json_fields(row, _JSON_FIELDS)
    run["check"], run["diff"] = bool(run["check"]), bool(run["diff"])
    if run["status"] not in ACTIVE_STATUSES:
        done = set(run["recap"]) | set(run["preflight"])
        run["not_run"] = [host for host in run["hosts"] if host not in done]
    return run


def get_run(ctx: HubContext, run_id: str) -> dict[str, Any]:
    rows = list(ctx.store.read().query("SELECT * FROM runs WHERE id = ?", [run_id]))
    if not rows:
        raise NotFound(f"no run with id {run_id}")
    return decode(rows[0])


def list_runs(
    ctx: HubContext, *, limit: int = 50, status: str | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    """The newest runs first; `offset` skips that many (the dashboard's pages)."""
    where, params = ("WHERE status = ?", [status]) if status else ("", [])
    rows = ctx.store.read().query(
        f"SELECT * FROM runs {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [decode(row) for row in rows]


def run_events(
    ctx: HubContext, run_id: str, after_seq: int = 0, limit: int = 1000
) -> list[dict[str, Any]]:
    """Events of a run with seq > `after_seq`, in order: poll with the last seq seen."""
    db = ctx.store.read()
    if db.execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchone() is None:
        raise NotFound(f"no run with id {run_id}")
    rows = db.query(
        "SELECT * FROM run_events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        [run_id, after_seq, limit],
    )
    return [decode_json_fields(row, ["res"]) | {"changed": bool(row["changed"])} for row in rows]
