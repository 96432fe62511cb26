"""The hub's audit key: Ed25519, in `DATA_DIR/audit.key` (0600), apart from the CA key and the
sealing key, so a leak of one does not let anyone sign checkpoints or open secrets.

Its public half goes to `DATA_DIR/audit.pub` (PEM): `aiorch audit verify` and agents check
checkpoints with it and need no secret.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from aiorch.audit_chain import KEY_FILE, PUBLIC_KEY_FILE, origin
from aiorch.errors import UserError
from aiorch.hub.pki.keyfiles import check_private, write_private
from edge_agent.contract.audit import Checkpoint, sign


class AuditKey:
    """The signing key, plus the newest checkpoints signed with it, kept in memory once
    `loaded`: `latest` in the database (every agent check-in carries it, so it must cost
    nothing) and `anchor` in the checkpoints file (the hub never signs against it)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.origin = origin(key.public_key())
        self.latest: Checkpoint | None = None
        self.anchor: Checkpoint | None = None
        self.loaded = False

    @classmethod
    def in_dir(cls, data_dir: Path) -> AuditKey:
        """The data dir's key, made on first start; refuses a key file others may read."""
        path = data_dir / KEY_FILE
        if not path.exists():
            _create(path)
        check_private(path)
        key = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise UserError(f"{path} does not hold an Ed25519 private key")
        audit_key = cls(key)
        audit_key.publish(data_dir / PUBLIC_KEY_FILE)
        return audit_key

    @property
    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)

    def sign(self, size: int, root: bytes, timestamp: int) -> Checkpoint:
        return sign(self._key, self.origin, size, root, timestamp)

    def publish(self, path: Path) -> None:
        """Write the public key (world-readable) unless it is there already."""
        if path.exists() and path.read_bytes() == self.public_pem:
            return
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(self.public_pem)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)


def _create(path: Path) -> None:
    """A new key, unless another process starting at the same moment made one first."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    write_private(path, pem)
