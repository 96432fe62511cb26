"""m017: each host's GPU acceptance record (issue 15 part 4), the newest per host, as
gpu_acceptance.yml returned it: placement keeps GPU work off a host whose record failed."""

from __future__ import annotations

import sqlite_utils


def m017_gpu_acceptance(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE gpu_acceptance (
            host TEXT PRIMARY KEY,
            accepted INTEGER NOT NULL,
            record TEXT NOT NULL,
            run_id TEXT NOT NULL,
            recorded_at REAL NOT NULL
        )"""
    )
