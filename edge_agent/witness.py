"""The agent as a witness of the hub's audit log: it keeps the newest signed checkpoint the hub
showed it (`state_dir/audit-checkpoint.json`) and says when the hub later shows one that
contradicts it, i.e. the hub's database was rolled back or rewritten.

An agent holds only what it was shown; `aiorch audit verify --checkpoint FILE` checks such a
copy against the hub's chain. Standard library and cryptography only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from edge_agent.contract.audit import Checkpoint, contradiction, parse_checkpoint, signed_by
from edge_agent.contract.fields import ContractError
from edge_agent.state import read_json, write_private

CHECKPOINT_FILE = "audit-checkpoint.json"


def observe(
    state_dir: Path, checkpoint: dict[str, Any], hub_audit_pub_pem: bytes | None
) -> str | None:
    """Take the checkpoint from a check-in answer: keep it when it is the newest seen, and
    return a one-line problem (keeping the held one) when it is malformed, not signed by
    `hub_audit_pub_pem` (when given), or contradicts the one held."""
    try:
        seen = parse_checkpoint(checkpoint)
    except ContractError as exc:
        return f"the hub sent a malformed audit checkpoint: {exc}"
    if hub_audit_pub_pem is not None:
        try:
            key = _public_key(hub_audit_pub_pem)
        except ValueError as exc:
            return f"the hub's audit public key is unusable: {exc}"
        if not signed_by(seen, key):
            return f"the hub's audit {seen.describe()} is not signed by its audit key"
    path = state_dir / CHECKPOINT_FILE
    held = _held(path)
    if held is not None:
        problem = contradiction(held, seen)
        if problem is not None:
            return problem
        if seen.size == held.size:
            return None
    write_private(path, seen.to_json())
    return None


def _held(path: Path) -> Checkpoint | None:
    """The checkpoint kept earlier; an unreadable file counts as none (it is ours, written
    atomically, so only a disk fault makes it so)."""
    data = read_json(path)
    try:
        return None if data is None else parse_checkpoint(data)
    except ContractError:
        return None


def _public_key(pem: bytes) -> Ed25519PublicKey:
    key = load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the hub's audit public key is not an Ed25519 key")
    return key
