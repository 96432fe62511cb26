"""Secrets at rest: secret values are sealed with AES-SIV under a key kept beside the database
(`secrets.key`, mode 0600), so the database file alone (a backup, a copy sent for a bug report)
gives none of them away.

Each value is bound to where it belongs: the AES-SIV associated data is its binding (for a
workload's secretEnv: project, deployment, variable; for an inventory var: host or group and
the var's path). A sealed value copied anywhere else does not open: it fails closed.

Deterministic on purpose: the same secret in the same place seals to the same text, so an
unchanged spec or desired state still compares equal and no agent is told to restart for
nothing. The same secret in two places seals to two different texts.

Values sealed before bindings existed (`sealed:v1:`, no associated data) still open; nothing
writes them any more, so each is resealed with its binding the next time its deployment is
applied or its agent's desired state is written (replicas reseal from the opened spec).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from aiorch.errors import Unavailable

PREFIX = "sealed:v2:"
LEGACY_PREFIX = "sealed:v1:"  # unbound: opened, never written
KEY_FILE = "secrets.key"
HIDDEN = "<sealed>"  # what API answers show instead of a sealed value

Binding = tuple[str, ...]


def secret_env_binding(project: str, deployment: str, name: str) -> Binding:
    return ("secretEnv", project, deployment, name)


def seal_scope(job: str) -> str:
    """What a job's secret values are sealed for, in place of a deployment's name: never the
    same as any deployment's (a job named like one shares none of its secrets)."""
    return f"job:{job}"


def inventory_binding(kind: str, owner: str, path: tuple[str, ...]) -> Binding:
    """`kind` is "host" or "group"; `path` the var's name and any keys below it."""
    return ("inventory", kind, owner, *path)


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith((PREFIX, LEGACY_PREFIX))


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

    def seal(self, value: str, binding: Binding) -> str:
        sealed = self._aead.encrypt(value.encode(), _associated(binding))
        return PREFIX + base64.urlsafe_b64encode(sealed).decode()

    def unseal(self, value: str, binding: Binding) -> str:
        """The secret in `value`, if it was sealed for `binding`; text that was never sealed
        (stored before sealing existed) comes back as it is."""
        if value.startswith(PREFIX):
            blob, associated = value[len(PREFIX) :], _associated(binding)
        elif value.startswith(LEGACY_PREFIX):
            blob, associated = value[len(LEGACY_PREFIX) :], None
        else:
            return value
        try:
            return self._aead.decrypt(base64.urlsafe_b64decode(blob), associated).decode()
        except (InvalidTag, ValueError):
            raise Unavailable(
                f"a stored secret ({binding[0]} {'/'.join(binding[1:])}) does not open: "
                f"the key in {KEY_FILE} was replaced, or the value was moved from where it "
                "was sealed",
                retry_after=60,
            ) from None

    def seal_env(self, values: Mapping[str, str], project: str, deployment: str) -> dict[str, str]:
        """A workload's secretEnv, each value bound to its project, deployment and name."""
        return {
            name: self.seal(value, secret_env_binding(project, deployment, name))
            for name, value in values.items()
        }

    def unseal_env(
        self, values: Mapping[str, str], project: str, deployment: str
    ) -> dict[str, str]:
        return {
            name: self.unseal(value, secret_env_binding(project, deployment, name))
            for name, value in values.items()
        }


def _associated(binding: Binding) -> list[bytes]:
    # AES-SIV takes the associated data as a vector, so no part can run into the next.
    return [b"aiorch", *(part.encode() for part in binding)]
