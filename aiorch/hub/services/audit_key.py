"""The hub's audit key: Ed25519, in `DATA_DIR/audit.key` (0600), apart from the CA key and the
sealing key, so a leak of one does not let anyone sign checkpoints or open secrets.

Its public half goes to `DATA_DIR/audit.pub` (PEM): `aiorch audit verify` and agents check
checkpoints with it and need no secret.
"""

from __future__ import annotations

import contextlib
import os
import stat
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
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise UserError(
                f"{path} has mode {mode:04o}: the audit key must be readable by the hub's user "
                f"only (chmod 600 {path})"
            )
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
    """Write a new key under a temporary name (O_EXCL, 0600) and link it into place: two
    processes starting at once end up with one key, and nobody ever reads half a file."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # O_EXCL, 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # another process made one first: theirs
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
