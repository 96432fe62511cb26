"""m012: the hub's model store. A model is a name and a digest (of its file list); its files
are rows of model_files, their bytes blobs named by sha256 under DATA_DIR/models/blobs."""

from __future__ import annotations

import sqlite_utils


def m012_models(db: sqlite_utils.Database) -> None:
    for statement in (
        """CREATE TABLE models (
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            project TEXT NOT NULL DEFAULT 'default',
            size INTEGER NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (name, digest)
        )""",
        "CREATE INDEX models_digest ON models(digest)",
        """CREATE TABLE model_files (
            digest TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            PRIMARY KEY (digest, path)
        )""",
        "CREATE INDEX model_files_sha256 ON model_files(sha256)",
    ):
        db.execute(statement)
