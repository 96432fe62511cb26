"""The audit log: who did what to what, written in the same transaction as the change."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from aiorch.hub.context import HubContext, decode_json_fields


def record(
    db: sqlite_utils.Database,
    actor: str,
    action: str,
    target: str,
    detail: dict[str, Any] | None = None,
    *,
    ts: float | None = None,
) -> None:
    """Append one entry; callers pass no secrets in `detail`."""
    db.table("audit_log").insert(
        {
            "ts": time.time() if ts is None else ts,
            "actor": actor,
            "action": action,
            "target": target,
            "detail": json.dumps(detail or {}, sort_keys=True),
        }
    )


def list_entries(ctx: HubContext, *, limit: int = 100, action: str | None = None) -> list[dict]:
    where, params = ("WHERE action = ?", [action]) if action else ("", [])
    rows = ctx.store.read().query(
        f"SELECT * FROM audit_log {where} ORDER BY id DESC LIMIT ?", [*params, limit]
    )
    return [decode_json_fields(r, ["detail"]) for r in rows]
