"""``manifest.json``: what a site repository was built from and the sha256 of every file.

The manifest is both the cache key for the next build (same inputs and intact
files: nothing to fetch) and what ``aiorch repo verify`` checks before a
repository is trusted on a site.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.digest import sha256_file

MANIFEST = "manifest.json"
FORMAT = 2  # 2: architectures and the signature's key and expiry


@dataclass(frozen=True)
class Manifest:
    """Inputs of a build and its output files (path relative to the repo -> sha256).

    ``key_id`` and ``valid_until`` (ISO-8601 UTC) say who signed ``debs/InRelease`` and until
    when apt accepts it: the next build re-signs when either no longer fits.
    """

    packages: tuple[str, ...]
    sources: tuple[str, ...]
    requirements: tuple[str, ...]
    python_version: str
    project_digest: str
    arches: tuple[str, ...] = ()
    key_id: str = ""
    valid_until: str = ""
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        data: dict[str, Any] = {"format": FORMAT, **asdict(self)}
        data["files"] = dict(sorted(self.files.items()))
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown manifest format {data.get('format')!r}")
        return cls(
            packages=tuple(data["packages"]),
            sources=tuple(data["sources"]),
            requirements=tuple(data["requirements"]),
            python_version=str(data["python_version"]),
            project_digest=str(data["project_digest"]),
            arches=tuple(data["arches"]),
            key_id=str(data["key_id"]),
            valid_until=str(data["valid_until"]),
            files={str(k): str(v) for k, v in data["files"].items()},
        )


def repo_files(repo_dir: Path) -> list[str]:
    """Every regular file under ``repo_dir`` except the manifest, as sorted relative paths."""
    return sorted(
        str(p.relative_to(repo_dir))
        for p in repo_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST
    )


def hash_files(repo_dir: Path) -> dict[str, str]:
    return {rel: sha256_file(repo_dir / rel) for rel in repo_files(repo_dir)}


def load_manifest(repo_dir: Path) -> Manifest | None:
    """The manifest in ``repo_dir``, or None where there is none or it cannot be read."""
    try:
        return Manifest.from_json((repo_dir / MANIFEST).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_manifest(repo_dir: Path, manifest: Manifest) -> None:
    """Write via a temp file and rename, so a reader never sees half a manifest."""
    tmp = repo_dir / f".{MANIFEST}.tmp"
    tmp.write_text(manifest.to_json())
    os.replace(tmp, repo_dir / MANIFEST)


def verify_files(repo_dir: Path, files: dict[str, str], prefix: str = "") -> list[str]:
    """Problems with the listed files whose path starts with ``prefix`` (missing, changed)."""
    problems = []
    for rel, expected in sorted(files.items()):
        if not rel.startswith(prefix):
            continue
        path = repo_dir / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif sha256_file(path) != expected:
            problems.append(f"sha256 mismatch: {rel}")
    return problems


def verify_repo(repo_dir: Path) -> list[str]:
    """Every problem with a built repository, one line each; empty means intact.

    Files that the manifest does not list count too: a repository that gained
    a package nobody built is as suspect as one that lost one.
    """
    manifest = load_manifest(repo_dir)
    if manifest is None:
        return [f"no readable {MANIFEST} in {repo_dir}"]
    problems = verify_files(repo_dir, manifest.files)
    extra = sorted(set(repo_files(repo_dir)) - set(manifest.files))
    problems += [f"not in manifest: {rel}" for rel in extra]
    return problems
