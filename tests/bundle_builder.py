"""Small real bundles for import tests, made with aiorch.bundle.create from synthetic inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiorch.bundle import keys
from aiorch.bundle.create import Since, create_bundle
from aiorch.bundle.manifest import MANIFEST, digest_of, parse
from aiorch.bundle.sources import Contents


def make_bundle(
    out: Path,
    key_dir: Path,
    version: int,
    repo: dict[str, bytes],
    *,
    expires_in_days: int = 365,
    since: Path | None = None,
    images: dict[str, Path] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """A bundle in `out` signed by the key in `key_dir`: `repo` (paths under repo/), more site
    files in `extra_files` (under hub/), `images` (ref -> archive), a delta `since` a bundle dir."""
    sources = out.with_name(f"{out.name}-inputs")
    contents = Contents()
    for rel, data in {
        **{f"repo/{p}": d for p, d in repo.items()},
        **{f"hub/{p}": d for p, d in (extra_files or {}).items()},
    }.items():
        src = sources / rel
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        contents.add(rel, src)
    for number, (ref, archive) in enumerate(sorted((images or {}).items())):
        path = f"images/image-{number}.tar"
        contents.add(path, archive)
        contents.images.append((ref, path))
    base = None
    if since is not None:
        raw = (since / MANIFEST).read_bytes()
        base = Since(parse(raw), digest_of(raw))
    create_bundle(
        out,
        keys.load_signing_key(key_dir / keys.KEY_FILE),
        contents,
        name="site",
        created=datetime.now(UTC),
        version=version,
        expires_in=timedelta(days=expires_in_days),
        since=base,
    )
    return out
