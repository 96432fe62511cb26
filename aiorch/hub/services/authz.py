"""Project policy the hub enforces (placeholder until projects land: see allowed_host_paths)."""

from __future__ import annotations

import json
import sqlite3

import sqlite_utils


def allowed_host_paths(db: sqlite_utils.Database, project: str) -> list[str]:
    """The host directories `project`'s workloads may mount: its policy's `allowed_host_paths`
    (from `projects.policy`, JSON), or none at all while there is no such policy."""
    try:
        row = db.execute("SELECT policy FROM projects WHERE name = ?", [project]).fetchone()
    except sqlite3.OperationalError:  # no projects table (yet)
        return []
    policy = json.loads(row[0]) if row and row[0] else {}
    return [str(path) for path in policy.get("allowed_host_paths") or []]
