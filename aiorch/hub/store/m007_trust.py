"""m007: the hub's certificate authorities, the certificates it issued to agents, and what
enrollment tokens may do. Frozen once released: it imports no domain code."""

from __future__ import annotations

import sqlite_utils


def m007_trust(db: sqlite_utils.Database) -> None:
    """Agents authenticate with client certificates from here on; bearer credentials of
    agents enrolled before stop working (such a host enrolls again with a fresh token)."""
    for statement in (
        """CREATE TABLE hub_cas (
            id TEXT PRIMARY KEY,
            cert_pem TEXT NOT NULL,
            pin TEXT NOT NULL UNIQUE,
            state TEXT NOT NULL CHECK (state IN ('active', 'next', 'retired')),
            created_at REAL NOT NULL,
            not_after REAL NOT NULL
        )""",
        """CREATE TABLE agent_certs (
            serial TEXT PRIMARY KEY,
            agent_id TEXT NOT NULL,
            ca_id TEXT NOT NULL,
            spki_pin TEXT NOT NULL,
            not_before REAL NOT NULL,
            not_after REAL NOT NULL,
            issued_at REAL NOT NULL,
            how TEXT NOT NULL,
            revoked_at REAL
        )""",
        "CREATE INDEX agent_certs_agent ON agent_certs(agent_id)",
        """CREATE TABLE hub_trust (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            phase TEXT NOT NULL,
            cross_cert_pem TEXT,
            updated_at REAL NOT NULL
        )""",
        """CREATE TABLE used_nonces (
            nonce TEXT PRIMARY KEY,
            expires_at REAL NOT NULL
        )""",
        "ALTER TABLE enrollment_tokens ADD COLUMN host TEXT",
        "ALTER TABLE enrollment_tokens ADD COLUMN replace_host INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE agents ADD COLUMN rekey_requested INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE sites ADD COLUMN offline_grace_s REAL",
    ):
        db.execute(statement)
