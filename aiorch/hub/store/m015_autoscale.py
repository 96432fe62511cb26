"""m015: the autoscaler's memory per deployment: the load it last summed, the count that asks
for, and since when a different count has been wanted (the delays against flapping count from
there, across passes and hub restarts)."""

from __future__ import annotations

import sqlite_utils


def m015_autoscale(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE deployment_autoscale (
            deployment TEXT PRIMARY KEY,
            load REAL,
            complete INTEGER NOT NULL,
            desired INTEGER NOT NULL,
            wanted INTEGER,
            since REAL,
            updated_at REAL NOT NULL
        )"""
    )
