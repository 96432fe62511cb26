"""m013: dashboard sign-in sessions. Only a hash of the session id is kept, so a copy of the
database signs nobody in; the session borrows the API token's identity and roles."""

from __future__ import annotations

import sqlite_utils


def m013_ui_sessions(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE ui_sessions (
            id_hash TEXT PRIMARY KEY,
            token_id TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX ui_sessions_token ON ui_sessions(token_id)")
