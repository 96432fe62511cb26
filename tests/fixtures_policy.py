"""Project policy for tests: the host paths a project may mount, written where
aiorch.hub.services.authz.allowed_host_paths reads them (the one place to change when the
projects schema changes)."""

from __future__ import annotations

import json

import sqlite_utils

from aiorch.hub.context import HubContext


def allow_host_paths(ctx: HubContext, project: str, *prefixes: str) -> None:
    def op(db: sqlite_utils.Database) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS projects (name TEXT PRIMARY KEY, policy TEXT)")
        db.execute(
            "INSERT INTO projects (name, policy) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET policy = excluded.policy",
            [project, json.dumps({"allowed_host_paths": list(prefixes)})],
        )

    ctx.store.write(op)
