"""Secrets at rest: deployment secret values are sealed with AES-SIV under a key kept beside
the database (`secrets.key`, mode 0600), so the database file alone (a backup, a copy sent
for a bug report) gives none of them away.

Deterministic on purpose: the same secret seals to the same text, so an unchanged spec or
desired state still compares equal and no agent is told to restart for nothing.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from aiorch.errors import Unavailable

PREFIX = "sealed:v1:"
KEY_FILE = "secrets.key"


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESSIV(key)

    @classmethod
    def in_dir(cls, data_dir: Path) -> Sealer:
        """The data dir's key, made on first use (created exclusively, so two processes
        starting at once cannot end up with different keys)."""
        path = data_dir / KEY_FILE
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(path.read_bytes())
        key = AESSIV.generate_key(512)
        with os.fdopen(fd, "wb") as out:
            out.write(key)
        return cls(key)

    def seal(self, value: str) -> str:
        return PREFIX + base64.urlsafe_b64encode(self._aead.encrypt(value.encode(), None)).decode()

    def unseal(self, value: str) -> str:
        """The secret in `value`; text that was never sealed (stored before sealing existed)
        comes back as it is."""
        if not value.startswith(PREFIX):
            return value
        try:
            return self._aead.decrypt(base64.urlsafe_b64decode(value[len(PREFIX) :]), None).decode()
        except (InvalidTag, ValueError):
            raise Unavailable(
                f"a stored secret does not open with the key in {KEY_FILE}: "
                "was the data directory's key replaced?",
                retry_after=60,
            ) from None

    def seal_all(self, values: dict[str, str]) -> dict[str, str]:
        return {name: self.seal(value) for name, value in values.items()}

    def unseal_all(self, values: dict[str, str]) -> dict[str, str]:
        return {name: self.unseal(value) for name, value in values.items()}
