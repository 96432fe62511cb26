"""m018: power requests for machines with no BMC (the agent:// driver), one row per host:
the next boot asked for, the request its agent has yet to act on, and the last outcome."""

from __future__ import annotations

import sqlite_utils


def m018_power_requests(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE power_requests (
            host TEXT PRIMARY KEY,
            boot_next TEXT,
            request TEXT,
            requested_at REAL,
            outcome TEXT,
            outcome_at REAL
        )"""
    )
