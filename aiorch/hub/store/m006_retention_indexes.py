"""m006: the run retention job looks for the oldest finished runs."""

from __future__ import annotations

import sqlite_utils


def m006_retention_indexes(db: sqlite_utils.Database) -> None:
    db.execute("CREATE INDEX runs_finished ON runs(finished_at)")
