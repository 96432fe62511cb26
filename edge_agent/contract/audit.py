"""The hub's audit checkpoint: a signed statement "my audit log had `size` rows ending in `root`".

The hub signs one every so often and hands the newest to agents in their check-in answers;
agents keep the newest they saw (edge_agent.witness), and `aiorch audit verify` checks every copy
against the chain. Held by several parties, a checkpoint makes a rolled-back or rewritten hub
database visible: nobody but the hub's audit key can sign one, and two honest checkpoints never
contradict each other.

The signed text is a C2SP signed note (c2sp.org/signed-note, tlog-checkpoint):
`<origin>\\n<size>\\n<base64 root>\\ntime <unix seconds>\\n`, signed with Ed25519 under the key
name `origin`; the signature is `base64(4-byte key ID || 64-byte signature)`. On the wire it is
the JSON object `{"origin", "size", "root", "timestamp", "signature"}`.

This is the one module of the contract that needs `cryptography` (for Ed25519); the rest of
the agent's side of the contract stays standard library only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge_agent.contract.fields import ContractError, text, whole

ED25519 = b"\x01"  # the signed-note signature type byte for Ed25519
_ORIGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
_ROOT_BYTES = 32
_SIG_BYTES = 4 + 64


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int  # the seq of the newest audit row it covers (rows are numbered from 1)
    root: str  # base64 of that row's chain hash
    timestamp: int  # unix seconds, hub clock
    signature: str  # base64(key ID || Ed25519 signature over `note_text()`)

    def note_text(self) -> bytes:
        """The signed text (the checkpoint body of the note)."""
        return f"{self.origin}\n{self.size}\n{self.root}\ntime {self.timestamp}\n".encode()

    def signed_note(self) -> str:
        """The whole C2SP signed note, for people and tools that speak the format."""
        return f"{self.note_text().decode()}\n\u2014 {self.origin} {self.signature}\n"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"checkpoint size {self.size} (time {self.timestamp})"


def parse_checkpoint(data: Any) -> Checkpoint:
    """A checkpoint from JSON, or `ContractError` naming the bad field."""
    if not isinstance(data, dict):
        raise ContractError("checkpoint", "must be an object")
    origin = text(data.get("origin"), "origin", 200)
    if not _ORIGIN.fullmatch(origin):
        raise ContractError("origin", "must be a key name such as aiorch/<hub-id>")
    size = whole(data.get("size"), "size", minimum=1)
    root = text(data.get("root"), "root", 100)
    if len(_b64(root, "root")) != _ROOT_BYTES:
        raise ContractError("root", f"must be {_ROOT_BYTES} bytes in base64")
    timestamp = whole(data.get("timestamp"), "timestamp")
    signature = text(data.get("signature"), "signature", 200)
    if len(_b64(signature, "signature")) != _SIG_BYTES:
        raise ContractError("signature", f"must be {_SIG_BYTES} bytes in base64")
    return Checkpoint(origin, size, root, timestamp, signature)


def key_id(origin: str, public_key: Ed25519PublicKey) -> bytes:
    """The signed-note key ID: SHA-256(key name || 0x0A || 0x01 || public key)[:4]."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(origin.encode() + b"\n" + ED25519 + raw).digest()[:4]


def sign(key: Ed25519PrivateKey, origin: str, size: int, root: bytes, timestamp: int) -> Checkpoint:
    unsigned = Checkpoint(origin, size, base64.b64encode(root).decode(), timestamp, "")
    sig = key_id(origin, key.public_key()) + key.sign(unsigned.note_text())
    return Checkpoint(origin, size, unsigned.root, timestamp, base64.b64encode(sig).decode())


def signed_by(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    """Whether `public_key` signed this checkpoint (key ID and signature both match)."""
    sig = base64.b64decode(checkpoint.signature)
    if sig[:4] != key_id(checkpoint.origin, public_key):
        return False
    try:
        public_key.verify(sig[4:], checkpoint.note_text())
    except InvalidSignature:
        return False
    return True


def contradiction(earlier: Checkpoint, later: Checkpoint) -> str | None:
    """Why two checkpoints of one log cannot both be honest, or None.

    `earlier` was seen (or signed) before `later`: a log only grows, so a later checkpoint
    with fewer rows, or another root at the same size, means history was rolled back or
    rewritten."""
    if later.origin != earlier.origin:
        return f"{later.describe()} is from log {later.origin}, not {earlier.origin}"
    if later.size < earlier.size:
        return (
            f"{later.describe()} is smaller than the earlier {earlier.describe()}: "
            "the hub's audit log was rolled back"
        )
    if later.size == earlier.size and later.root != earlier.root:
        return (
            f"{later.describe()} has another root than the earlier {earlier.describe()}: "
            "the hub's audit log was rewritten"
        )
    return None


def _b64(value: str, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ContractError(field, "is not base64") from None
