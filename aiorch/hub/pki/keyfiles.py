"""Private keys on disk: created exclusively with mode 0600, and refused when anyone else may
read them (a key that others could have copied is no longer the hub's alone)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from aiorch.errors import UserError

KeyType = ec.EllipticCurvePrivateKey


def check_private(path: Path) -> None:
    """Refuse a key file that group or others can read or write."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise UserError(
            f"{path} has mode {mode:04o}: a private key must be 0600 (chmod 600 {path})"
        )


def write_private(path: Path, data: bytes, *, exclusive: bool = True) -> bool:
    """Write `data` to `path` as 0600 under a temporary name, then put it in place: nobody
    ever reads half a file. `exclusive` keeps a file another process put there first (and
    returns False); otherwise the old file is replaced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # O_EXCL, 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def key_pem(key: KeyType) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(path: Path) -> KeyType:
    check_private(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UserError(f"{path} is not an EC private key")
    return key


@contextmanager
def init_lock(data_dir: Path) -> Iterator[None]:
    """Held while a hub sets up its data dir (schema, CA, admin token): two processes
    starting on an empty dir at once end up with one CA, not one each."""
    fd = os.open(data_dir / ".init.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
