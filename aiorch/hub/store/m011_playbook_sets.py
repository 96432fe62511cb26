"""m011: playbook sets (each version of a named set, by content digest) and the set each run
used. `seq` orders registrations: a name's current version is its highest. Runs from before
ran the hub's own playbooks folder, so they get set "aiorch" and no digest (none was taken).
"""

from __future__ import annotations

import sqlite_utils


def m011_playbook_sets(db: sqlite_utils.Database) -> None:
    for statement in (
        """CREATE TABLE playbook_sets (
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            collections INTEGER NOT NULL DEFAULT 0,
            files INTEGER NOT NULL,
            size INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            registered_by TEXT NOT NULL,
            registered_at REAL NOT NULL,
            PRIMARY KEY (name, digest)
        )""",
        "CREATE INDEX playbook_sets_seq ON playbook_sets(name, seq)",
        "ALTER TABLE runs ADD COLUMN playbook_set TEXT",
        "ALTER TABLE runs ADD COLUMN playbook_set_digest TEXT",
        "UPDATE runs SET playbook_set = 'aiorch'",
    ):
        db.execute(statement)
