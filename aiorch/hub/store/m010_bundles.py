"""m010: the keys a hub trusts to sign content bundles, and the bundles it imported.

Frozen once released: it imports no domain code. A removed key keeps its row (removed_at set)
so the imports it signed still name a key the hub once trusted. `is_current` marks the one
import whose release tree content/current points at; the highest `version` ever imported
is what replay protection compares against, even after a downgrade.
"""

from __future__ import annotations

import sqlite_utils


def m010_bundles(db: sqlite_utils.Database) -> None:
    for statement in (
        """CREATE TABLE bundle_keys (
            key_id TEXT PRIMARY KEY,
            public_text TEXT NOT NULL,
            added_by TEXT NOT NULL,
            added_at REAL NOT NULL,
            removed_by TEXT,
            removed_at REAL
        )""",
        """CREATE TABLE bundle_imports (
            digest TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            key_id TEXT NOT NULL,
            expires TEXT NOT NULL,
            imported_by TEXT NOT NULL,
            imported_at REAL NOT NULL,
            downgrade INTEGER NOT NULL DEFAULT 0,
            is_current INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX bundle_imports_version ON bundle_imports(version)",
    ):
        db.execute(statement)
