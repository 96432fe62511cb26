"""Project policy for tests: the host paths a project may mount, written where
aiorch.hub.services.projects.allowed_host_paths reads them."""

from __future__ import annotations

import json

import sqlite_utils

from aiorch.hub.context import HubContext


def allow_host_paths(ctx: HubContext, project: str, *prefixes: str) -> None:
    def op(db: sqlite_utils.Database) -> None:
        db.execute(
            "INSERT INTO projects (name, host_path_prefixes, created_by, created_at) "
            "VALUES (?, ?, 'test', 0) "
            "ON CONFLICT (name) DO UPDATE SET host_path_prefixes = excluded.host_path_prefixes",
            [project, json.dumps(list(prefixes))],
        )

    ctx.store.write(op)
