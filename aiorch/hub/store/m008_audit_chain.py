"""m008: the audit log becomes a hash chain, with a table for its signed checkpoints.

Frozen like every migration: the row hash is copied here rather than imported, so a later
change to the live code cannot change what an old database migrates to.
"""

from __future__ import annotations

import hashlib
import json

import rfc8785
import sqlite_utils

_GENESIS = bytes(32)


def _hash(prev: bytes, seq: int, ts: float, actor: str, action: str, target: str,
          detail: str) -> bytes:  # fmt: skip
    body = {"seq": seq, "ts": ts, "actor": actor, "action": action, "target": target,
            "detail": json.loads(detail)}  # fmt: skip
    return hashlib.sha256(b"\x00" + prev + rfc8785.dumps(body)).digest()


def m008_audit_chain(db: sqlite_utils.Database) -> None:
    """Add prev_hash/hash, chain the rows already there once, in id order."""
    db.execute("ALTER TABLE audit_log ADD COLUMN prev_hash TEXT")
    db.execute("ALTER TABLE audit_log ADD COLUMN hash TEXT")
    db.execute(
        """
        CREATE TABLE audit_checkpoints (
            size INTEGER PRIMARY KEY,
            origin TEXT NOT NULL,
            root TEXT NOT NULL,
            timestamp INTEGER NOT NULL,
            signature TEXT NOT NULL
        )
        """
    )
    prev = _GENESIS
    rows = db.execute(
        "SELECT id, ts, actor, action, target, detail FROM audit_log ORDER BY id"
    ).fetchall()
    for seq, ts, actor, action, target, detail in rows:
        digest = _hash(prev, seq, ts, actor, action, target, detail)
        db.execute(
            "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE id = ?",
            [prev.hex(), digest.hex(), seq],
        )
        prev = digest
