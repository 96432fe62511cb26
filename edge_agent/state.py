"""The agent's state dir: its enrollment record and last desired state, written atomically so
a crash or reboot never leaves a half-written file, and readable only by the agent (0600)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CREDENTIAL_FILE = "credential.json"
DESIRED_FILE = "desired.json"
FACTS_FILE = "facts.json"


def write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON via a temp file, fsync and rename: the old or the new content, never a mix."""
    write_private_bytes(path, json.dumps(data, sort_keys=True).encode())


def write_private_bytes(path: Path, data: bytes) -> None:
    """`data` to `path` (0600) via a temp file, fsync and rename, then fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class AgentState:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir

    @property
    def credential_path(self) -> Path:
        return self.dir / CREDENTIAL_FILE

    def credential(self) -> dict[str, Any] | None:
        return read_json(self.credential_path)

    def save_credential(self, hub_url: str, agent_id: str, site: str) -> None:
        """Who the agent is and where its hub is; the key and certificate are beside it
        (edge_agent/identity.py)."""
        write_private(
            self.credential_path, {"hub_url": hub_url, "agent_id": agent_id, "site": site}
        )

    def desired(self) -> dict[str, Any]:
        """The last desired state the hub sent (revision 0 and no workloads before the first)."""
        return read_json(self.dir / DESIRED_FILE) or {"revision": 0, "document": {"workloads": []}}

    def save_desired(self, revision: int, document: dict[str, Any]) -> None:
        write_private(self.dir / DESIRED_FILE, {"revision": revision, "document": document})

    def facts_hash(self) -> str | None:
        """Hash of the facts the hub last received, so unchanged facts are not resent."""
        data = read_json(self.dir / FACTS_FILE)
        return str(data["hash"]) if data and "hash" in data else None

    def save_facts_hash(self, digest: str) -> None:
        write_private(self.dir / FACTS_FILE, {"hash": digest})
