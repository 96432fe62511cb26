"""Gather what a bundle carries into its site tree: the site repository, playbooks, collections,
images and models, each checked for a name and a place before anything is hashed."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from aiorch.bundle.keys import SigningKey
from aiorch.bundle.manifest import Collection, Components, Image, Model, PlaybookSet
from aiorch.errors import UserError
from aiorch.repo import debs, hub_install
from aiorch.repo.build import build_repo
from aiorch.repo.cli import PROJECT
from edge_agent.contract.model import ModelFile, model_digest

# aiorch's own playbooks as installed (the package aiorch.playbooks), without the hub settings.
AIORCH_PLAYBOOKS = Path(str(resources.files("aiorch.playbooks")))
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SKIP = {"__pycache__", ".git", ".pytest_cache"}
DEFAULT_REQUIRES = {"architectures": ["amd64", "arm64"], "os": "debian-12"}


@dataclass
class Contents:
    """What goes in: site-tree path -> source file, and the typed components over those paths."""

    files: dict[str, Path] = field(default_factory=dict)
    images: list[tuple[str, str]] = field(default_factory=list)  # (ref, site path)
    models: dict[str, list[str]] = field(default_factory=dict)  # name -> site paths
    playbook_sets: dict[str, str] = field(default_factory=dict)  # name -> root
    collections: set[str] = field(default_factory=set)  # roots of ns/name
    requires: dict[str, object] = field(default_factory=lambda: dict(DEFAULT_REQUIRES))

    def add(self, path: str, src: Path) -> None:
        if path in self.files and self.files[path] != src:
            raise UserError(f"two inputs for {path}: {self.files[path]} and {src}")
        self.files[path] = src

    def components(self, sha256: dict[str, str], sizes: dict[str, int]) -> Components:
        """The typed lists, sorted, with digests from the files' hashes. A model's digest is the
        contract's (edge_agent.contract.model), over paths inside the model's folder: the one the
        hub's model store, deployments and agents name it by."""
        models = []
        for name, paths in sorted(self.models.items()):
            prefix = f"models/{name}/"
            listing = [ModelFile(p.removeprefix(prefix), sha256[p], sizes[p]) for p in paths]
            models.append(Model(name, model_digest(listing), tuple(sorted(paths))))
        return Components(
            images=tuple(Image(ref, p, "sha256:" + sha256[p]) for ref, p in sorted(self.images)),
            models=tuple(models),
            playbook_sets=tuple(PlaybookSet(n, r) for n, r in sorted(self.playbook_sets.items())),
            collections=tuple(Collection(r) for r in sorted(self.collections)),
        )


def _name(kind: str, name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UserError(f"{kind} name {name!r}: use lower-case letters, digits, '.', '_' or '-'")
    return name


def _dir(what: str, path: Path) -> Path:
    if not path.is_dir():
        raise UserError(f"{what} {path}: not a directory")
    return path


def _tree(src: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``src`` (relative POSIX path, path), caches and VCS left out."""
    out = []
    for here, dirs, names in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP)
        for name in names:
            path = Path(here, name)
            if path.is_file() and not name.endswith(".pyc"):
                out.append((path.relative_to(src).as_posix(), path))
    return sorted(out)


def add_tree(contents: Contents, prefix: str, src: Path) -> list[str]:
    paths = []
    for rel, path in _tree(src):
        contents.add(f"{prefix}/{rel}", path)
        paths.append(f"{prefix}/{rel}")
    return paths


def add_repo(contents: Contents, repo_dir: Path) -> None:
    """A built site repository (debs/, wheels/, manifest.json) as ``repo/``."""
    if not (_dir("--repo", repo_dir) / "debs").is_dir():
        raise UserError(f"--repo {repo_dir}: no debs/ (build it with `aiorch repo build`)")
    add_tree(contents, "repo", repo_dir)


def add_playbooks(contents: Contents, name: str, src: Path) -> None:
    root = f"playbooks/{_name('playbook set', name)}"
    if name in contents.playbook_sets:
        raise UserError(f"playbook set {name!r} given twice")
    add_tree(contents, root, _dir("--playbooks", src))
    contents.playbook_sets[name] = root


def add_collection(contents: Contents, src: Path) -> None:
    """An ``ansible_collections`` tree (or a folder holding one): each ns/name is a collection."""
    tree = src if src.name == "ansible_collections" else src / "ansible_collections"
    _dir("--collection", tree)
    found = [p for p in sorted(tree.glob("*/*")) if p.is_dir() and not p.name.startswith(".")]
    if not found:
        raise UserError(f"--collection {src}: no <namespace>/<name> folders in {tree}")
    for path in found:
        root = f"collections/ansible_collections/{path.parent.name}/{path.name}"
        add_tree(contents, root, path)
        contents.collections.add(root)


def add_image(contents: Contents, ref: str, archive: Path) -> None:
    """A podman/OCI archive: the component names its ref and the archive's digest."""
    if not archive.is_file():
        raise UserError(f"--image {ref}: {archive} is not a file")
    path = "images/" + re.sub(r"[^A-Za-z0-9._-]", "_", ref) + ".tar"
    contents.add(path, archive)
    contents.images.append((ref, path))


def add_model(contents: Contents, name: str, src: Path) -> None:
    if name in contents.models:
        raise UserError(f"model {name!r} given twice")
    paths = add_tree(contents, f"models/{_name('model', name)}", _dir("--model", src))
    if not paths:
        raise UserError(f"--model {name}: {src} holds no files")
    contents.models[name] = paths


def add_hub(contents: Contents, cache_root: Path) -> None:
    """The hub's own install (``hub/``: locked wheels for amd64 and arm64, aiorch's wheel with
    its playbooks, install-hub.sh), staged in a cache beside the site repository's."""
    site = cache_root / "hub-site"
    hub_install.stage(site)
    add_tree(contents, hub_install.HUB_DIR, site / hub_install.HUB_DIR)


def site_repo(
    cache_root: Path, packages: Sequence[str], signing_key: SigningKey, valid_for_days: int
) -> Path:
    """The site repository for ``packages``, built (or refreshed) in a cache keyed by its inputs.

    The one place the bundle calls ``build_repo``: where the repo build changes, only this does.
    The bundle key's OpenPGP half signs ``InRelease``, valid as long as the bundle.
    """
    sources = debs.default_sources()
    key = hashlib.sha256(json.dumps([sorted(set(packages)), list(sources)]).encode()).hexdigest()
    out = cache_root / key[:16]
    build_repo(
        out,
        packages,
        PROJECT,
        sources=sources,
        signing_key=signing_key,
        valid_for_days=valid_for_days,
    )
    return out
