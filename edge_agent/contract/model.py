"""Model references: the weights a workload mounts, as the desired state carries them.

A model is a set of files named by a digest: "sha256:" + sha256 of its canonical file list
(`model_digest`), so the same files are one model whatever they are called, and the agent can
check that the list it was sent is the one the digest names before it fetches anything. The
hub's model store (aiorch.hub.services.models), the bundle's model components and the agent's
model cache all name models this way. Standard library only: the agent imports it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from edge_agent.contract.fields import ContractError, items, mapping, text, whole

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
MAX_FILES = 4096
MAX_PATH = 1024


@dataclass(frozen=True)
class ModelFile:
    path: str  # relative, '/'-separated, inside the model's directory
    sha256: str  # hex
    size: int


@dataclass(frozen=True)
class ModelRef:
    name: str
    digest: str
    files: tuple[ModelFile, ...]
    mount_path: str

    @property
    def hex(self) -> str:
        return self.digest.removeprefix("sha256:")


def check_path(path: str, where: str = "path") -> str:
    """A file's place inside a model: relative, no '..', '.', empty parts or control
    characters, so it can never land outside the model's directory on any host."""
    path = text(path, where, max_length=MAX_PATH)
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ContractError(where, f"{path!r} must be a relative path without '.' or '..' parts")
    if any(ord(c) < 32 or c in "\\:," for c in path):
        raise ContractError(where, f"{path!r} holds a control character, '\\', ':' or ','")
    return path


def canonical_files(files: list[ModelFile] | tuple[ModelFile, ...]) -> bytes:
    """The file list as the digest covers it: sorted by path, JSON with sorted keys and no
    whitespace (for these strings and integers, the same bytes as RFC 8785)."""
    entries = [
        {"path": f.path, "sha256": f.sha256, "size": f.size}
        for f in sorted(files, key=lambda f: f.path)
    ]
    return json.dumps(entries, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def model_digest(files: list[ModelFile] | tuple[ModelFile, ...]) -> str:
    return "sha256:" + hashlib.sha256(canonical_files(files)).hexdigest()


def model_entry(model: ModelRef) -> dict[str, Any]:
    """One model reference as JSON data; `parse_model` reads it back unchanged."""
    return {
        "name": model.name,
        "digest": model.digest,
        "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in model.files],
        "mount_path": model.mount_path,
    }


def parse_model(raw: Any, where: str = "models") -> ModelRef:
    """One reference, checked field by field, its digest against its file list."""
    raw = mapping(raw, where)
    digest = text(raw.get("digest"), f"{where}.digest")
    if not DIGEST_RE.match(digest):
        raise ContractError(f"{where}.digest", f"must be sha256:<64 hex digits>, got {digest!r}")
    mount = text(raw.get("mount_path"), f"{where}.mount_path")
    if not mount.startswith("/") or any(c in mount for c in ":,\n"):
        raise ContractError(f"{where}.mount_path", "must be an absolute path without ':' or ','")
    listed = items(raw.get("files"), f"{where}.files")
    if not listed or len(listed) > MAX_FILES:
        raise ContractError(f"{where}.files", f"must list 1 to {MAX_FILES} files")
    files = tuple(_file(entry, f"{where}.files[{i}]") for i, entry in enumerate(listed))
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise ContractError(f"{where}.files", "list a path more than once")
    if model_digest(files) != digest:
        raise ContractError(f"{where}.digest", "is not the digest of its file list")
    return ModelRef(text(raw.get("name"), f"{where}.name", 253), digest, files, mount)


def _file(raw: Any, where: str) -> ModelFile:
    raw = mapping(raw, where)
    sha = text(raw.get("sha256"), f"{where}.sha256")
    if not SHA256_RE.match(sha):
        raise ContractError(f"{where}.sha256", "must be 64 lowercase hex digits")
    path = check_path(raw.get("path"), f"{where}.path")
    return ModelFile(path, sha, whole(raw.get("size"), f"{where}.size"))
