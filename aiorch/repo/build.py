"""``build_repo``: the site repository, rebuilt only where its inputs changed.

Three parts, each with its own cache key in the previous manifest: the debs (package list,
apt sources and architectures; their signature is renewed on its own when the key changed or
half its validity has passed), the dependency wheels (the pins of the agent's lock and target
Python) and the project's own wheel (a hash of its sources). A part whose key is unchanged and
whose files still verify is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from aiorch.errors import UserError
from aiorch.repo import debs, hostpython, lock, wheels
from aiorch.repo.manifest import Manifest, hash_files, load_manifest, verify_files, write_manifest

if TYPE_CHECKING:  # aiorch.bundle.keys imports aiorch.repo.signing, so only for the type
    from aiorch.bundle.keys import SigningKey

log = logging.getLogger("aiorch.repo")


def _intact(repo_dir: Path, old: Manifest | None, prefix: str) -> bool:
    """True when the previous build had files under ``prefix`` and all still verify."""
    if old is None or not any(rel.startswith(prefix) for rel in old.files):
        return False
    return not verify_files(repo_dir, old.files, prefix)


def _signature_fresh(old: Manifest, key_id: str, span: timedelta, now: datetime) -> bool:
    """The old InRelease may stay: same key, and more than half its validity still ahead."""
    try:
        until = datetime.fromisoformat(old.valid_until)
    except ValueError:
        return False
    return old.key_id == key_id and until - now > span / 2


def refresh_debs(
    out_dir: Path,
    old: Manifest | None,
    new: Manifest,
    signing_key: SigningKey,
    *,
    valid_for_days: int,
    now: datetime | None = None,
) -> Manifest:
    """Fetch and index ``debs/`` where ``new``'s packages, sources or architectures differ
    from ``old``'s, and sign it again where that happened, the key changed or less than half
    of the signature's validity is left. Returns ``new`` with its ``valid_until``."""
    debs_dir = out_dir / "debs"
    now, span = now or datetime.now(UTC), timedelta(days=valid_for_days)
    if (
        old
        and (old.packages, old.sources, old.arches) == (new.packages, new.sources, new.arches)
        and _intact(out_dir, old, "debs/")
    ):
        log.info("debs: unchanged, %d packages", len(new.packages))
        if _signature_fresh(old, new.key_id, span, now):
            return replace(new, valid_until=old.valid_until)
    else:
        log.info("debs: resolving %d packages for %s", len(new.packages), ", ".join(new.arches))
        debs.download_debs(new.packages, new.sources, debs_dir, new.arches)
        debs.index_debs(debs_dir)
    until = (now + span).replace(microsecond=0)
    log.info("debs: signing Release with %s, valid until %s", new.key_id, until.isoformat())
    debs.sign_release(
        debs_dir,
        arches=new.arches,
        apt_secret=signing_key.apt_secret,
        apt_public=signing_key.public.apt_public,
        valid_until=until,
        now=now,
    )
    return replace(new, valid_until=until.isoformat())


def build_repo(
    out_dir: Path,
    packages: Sequence[str],
    wheels_from: Path,
    *,
    sources: Sequence[str] | None = None,
    arches: Sequence[str] = debs.ARCHES,
    signing_key: SigningKey,
    valid_for_days: int = 365,
) -> Manifest:
    """Build (or refresh) the site repository in ``out_dir`` and return its manifest.

    ``packages`` are Debian package names, fetched with their full dependency
    closure from ``sources`` (default: this machine's Debian mirror, bookworm
    with updates and security). ``wheels_from`` is the project whose wheel and
    locked dependencies (``constraints/agent.txt``) go into ``wheels/``; the
    manifest's ``requirements`` are those pins. The debs of every one of ``arches`` share one
    flat apt repository, signed with ``signing_key`` (InRelease valid ``valid_for_days``).
    Needs the package registries.
    """
    if valid_for_days < 1:
        raise UserError(f"valid_for_days must be at least 1 (got {valid_for_days})")
    agent_lock = lock.read_lock(wheels_from)  # before any download: a stale lock stops here
    out_dir.mkdir(parents=True, exist_ok=True)
    old = load_manifest(out_dir)
    name, _ = hostpython.project_meta(wheels_from)
    new = Manifest(
        packages=tuple(sorted(set(packages))),
        sources=tuple(sources or debs.default_sources()),
        requirements=agent_lock.pins,
        python_version=hostpython.PYTHON_VERSION,
        project_digest=wheels.project_digest(wheels_from),
        arches=tuple(dict.fromkeys(arches)),
        key_id=signing_key.public.id,
    )
    new = refresh_debs(out_dir, old, new, signing_key, valid_for_days=valid_for_days)
    wheels_dir = out_dir / "wheels"
    wheels_ok = _intact(out_dir, old, "wheels/")
    if (
        wheels_ok
        and old
        and (old.requirements, old.python_version, old.arches)
        == (new.requirements, new.python_version, new.arches)
    ):
        log.info("wheels: dependencies unchanged")
    else:
        log.info("wheels: downloading %s", ", ".join(new.requirements))
        wheels.download_agent(wheels_dir, new.arches, project=wheels_from)
    if (
        wheels_ok
        and old
        and old.project_digest == new.project_digest
        and wheels.own_wheels(wheels_dir, name)
    ):
        log.info("wheels: %s unchanged", name)
    else:
        log.info("wheels: building %s", name)
        wheels.build_own_wheel(wheels_from, wheels_dir, name)
    wheels.write_index(wheels_dir)
    manifest = replace(new, files=hash_files(out_dir))
    write_manifest(out_dir, manifest)
    return manifest
