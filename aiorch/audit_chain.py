"""The audit log's hash chain and the files beside the database, shared by the hub (which
extends the chain and signs checkpoints) and `aiorch audit verify` (which recomputes it).

Each row's hash is `SHA-256(0x00 || prev_hash || JCS(row))`, where `row` holds seq (the row id),
ts, actor, action, target and detail, and JCS is RFC 8785 canonical JSON: any program that can
read the rows recomputes the same bytes. The 0x00 prefix is RFC 6962's leaf domain separator,
so a Merkle tree can later be built over the same leaves.

Kept free of server code: the CLI imports it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

GENESIS = bytes(32)  # the prev_hash of row 1
KEY_FILE = "audit.key"
PUBLIC_KEY_FILE = "audit.pub"
CHECKPOINTS_FILE = "audit-checkpoints.jsonl"


def row_hash(prev_hash: bytes, row: dict[str, Any]) -> bytes:
    """The chain hash of one row; `row` has seq, ts, actor, action, target and detail (the
    detail as an object, or as the JSON text it is stored as)."""
    detail = row["detail"]
    body = {
        "seq": row["seq"],
        "ts": row["ts"],
        "actor": row["actor"],
        "action": row["action"],
        "target": row["target"],
        "detail": json.loads(detail) if isinstance(detail, str) else detail,
    }
    return hashlib.sha256(b"\x00" + prev_hash + rfc8785.dumps(body)).digest()


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def origin(public_key: Ed25519PublicKey) -> str:
    """The log's name in its checkpoints, `aiorch/<hub-id>`: the hub id is the start of the
    audit key's fingerprint, so a checkpoint names the one key that may sign it."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"aiorch/{hashlib.sha256(raw).hexdigest()[:16]}"
