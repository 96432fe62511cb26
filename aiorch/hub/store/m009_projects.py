"""m009: projects, per-project token roles, token expiry, and the project of each image.

Existing tokens keep what they could do: a global `admin` becomes a global admin, a global
viewer or operator becomes that role on the `default` project. Every project a deployment or
quota already names gets a row, so its roles can be granted. Migrated tokens keep no expiry
(their holders were never told of one); tokens made from now on have one.
"""

from __future__ import annotations

import time

import sqlite_utils


def m009_projects(db: sqlite_utils.Database) -> None:
    now = time.time()
    for statement in (
        """CREATE TABLE projects (
            name TEXT PRIMARY KEY,
            allowed_sites TEXT NOT NULL DEFAULT '[]',
            allowed_regions TEXT NOT NULL DEFAULT '[]',
            host_path_prefixes TEXT NOT NULL DEFAULT '[]',
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE token_roles (
            token_id TEXT NOT NULL REFERENCES api_tokens(id),
            project TEXT NOT NULL REFERENCES projects(name),
            role TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
            granted_by TEXT NOT NULL,
            granted_at REAL NOT NULL,
            PRIMARY KEY (token_id, project)
        )""",
        "CREATE INDEX token_roles_project ON token_roles(project)",
        "ALTER TABLE api_tokens ADD COLUMN global_admin INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE api_tokens ADD COLUMN expires_at REAL",
        "UPDATE api_tokens SET global_admin = 1 WHERE role = 'admin'",
        "UPDATE deployments SET project = 'default' WHERE project IS NULL OR project = ''",
        "ALTER TABLE images ADD COLUMN project TEXT NOT NULL DEFAULT 'default'",
    ):
        db.execute(statement)
    db.execute(
        "INSERT INTO projects (name, created_by, created_at) SELECT name, 'migration', ? FROM "
        "(SELECT 'default' AS name UNION SELECT project FROM deployments "
        "UNION SELECT project FROM quotas) AS named",
        [now],
    )
    db.execute(
        "INSERT INTO token_roles (token_id, project, role, granted_by, granted_at) "
        "SELECT id, 'default', role, 'migration', ? FROM api_tokens WHERE role != 'admin'",
        [now],
    )
    db.execute("ALTER TABLE api_tokens DROP COLUMN role")
