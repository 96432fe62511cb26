"""m005: a drift check that could not finish on a host leaves it `unknown`, with the reason."""

from __future__ import annotations

import sqlite_utils


def m005_drift_state(db: sqlite_utils.Database) -> None:
    """Instead of saying nothing; rows from before were all found changes."""
    db.execute(
        "ALTER TABLE drift ADD COLUMN state TEXT NOT NULL DEFAULT 'drifted'"
        " CHECK (state IN ('drifted', 'unknown'))"
    )
    db.execute("ALTER TABLE drift ADD COLUMN reason TEXT")
