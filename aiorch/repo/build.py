"""``build_repo``: the site repository, rebuilt only where its inputs changed.

Three parts, each with its own cache key in the previous manifest: the debs
(package list and apt sources), the dependency wheels (the pins of the agent's lock and target
Python) and the project's own wheel (a hash of its sources). A part whose key
is unchanged and whose files still verify is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from aiorch.repo import debs, hostpython, lock, wheels
from aiorch.repo.manifest import Manifest, hash_files, load_manifest, verify_files, write_manifest

log = logging.getLogger("aiorch.repo")


def _intact(repo_dir: Path, old: Manifest | None, prefix: str) -> bool:
    """True when the previous build had files under ``prefix`` and all still verify."""
    if old is None or not any(rel.startswith(prefix) for rel in old.files):
        return False
    return not verify_files(repo_dir, old.files, prefix)


def build_repo(
    out_dir: Path,
    packages: Sequence[str],
    wheels_from: Path,
    *,
    sources: Sequence[str] | None = None,
) -> Manifest:
    """Build (or refresh) the site repository in ``out_dir`` and return its manifest.

    ``packages`` are Debian package names, fetched with their full dependency
    closure from ``sources`` (default: this machine's Debian mirror, bookworm
    with updates and security). ``wheels_from`` is the project whose wheel and
    locked dependencies (``constraints/agent.txt``) go into ``wheels/``; the
    manifest's ``requirements`` are those pins. Needs the package registries.
    """
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
    )
    debs_dir, wheels_dir = out_dir / "debs", out_dir / "wheels"
    if (
        old
        and (old.packages, old.sources) == (new.packages, new.sources)
        and _intact(out_dir, old, "debs/")
    ):
        log.info("debs: unchanged, %d packages", len(new.packages))
    else:
        log.info("debs: resolving and downloading %d packages", len(new.packages))
        debs.download_debs(new.packages, new.sources, debs_dir)
        debs.index_debs(debs_dir)
    wheels_ok = _intact(out_dir, old, "wheels/")
    if (
        wheels_ok
        and old
        and (old.requirements, old.python_version)
        == (
            new.requirements,
            new.python_version,
        )
    ):
        log.info("wheels: dependencies unchanged")
    else:
        log.info("wheels: downloading %s", ", ".join(new.requirements))
        wheels.download_agent(wheels_dir, project=wheels_from)
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
