"""Which hosts a `--limit` means, resolved against the hub's inventory (never against Ansible's
patterns), so the hub knows the exact hosts to lock, check and record before a run starts.

A limit is a comma-separated list of terms, and selects the union of what they match:

- `all` (or an empty limit): every host that is not retired;
- a host name;
- a group name: its hosts and the hosts of its child groups, at any depth;
- `KEY=VALUE` or `label=KEY=VALUE`: hosts whose label KEY is VALUE (site, role and region
  count as labels), e.g. `site=edge1` or `role=edge-box`.

A term that matches nothing is an error rather than an empty run. The playbook a run names is
resolved here too: inside its playbook set's folder, and nowhere else.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import sqlite_utils

from aiorch.errors import InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import playbook_sets
from aiorch.hub.services.playbook_sets import PlaybookSet

_COLUMN_LABELS = ("site", "role", "region")


def resolve_limit(db: sqlite_utils.Database, limit: str | None) -> list[str]:
    """The sorted host names `limit` selects among the hub's hosts that are not retired."""
    hosts = {
        row["name"]: row
        for row in db.query(
            "SELECT name, site, role, region, labels, groups, status FROM hosts ORDER BY name"
        )
    }
    active = {name for name, row in hosts.items() if row["status"] != "retired"}
    terms = [term.strip() for term in (limit or "").split(",") if term.strip()]
    if not terms:
        return sorted(active)
    children = {
        row["name"]: json.loads(row["children"])
        for row in db.query("SELECT name, children FROM inventory_groups")
    }
    selected: set[str] = set()
    for term in terms:
        if term in hosts and term not in active:
            raise InvalidInput(f"--limit {term}: host {term} is retired")
        matched = _match(term, hosts, children) & active
        if not matched:
            raise InvalidInput(f"--limit {term}: matches no host, group or label of the hub")
        selected |= matched
    return sorted(selected)


def _match(term: str, hosts: dict[str, dict[str, Any]], children: dict[str, list[str]]) -> set[str]:
    if term in ("all", "*"):
        return set(hosts)
    if term in hosts:
        return {term}
    if "=" in term:
        key, _, value = term.partition("=")
        if key == "label" and "=" in value:
            key, _, value = value.partition("=")
        return {name for name, row in hosts.items() if _labels(row).get(key) == value}
    groups = _descendants(term, children)
    return {name for name, row in hosts.items() if groups & set(json.loads(row["groups"]))}


def _labels(row: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = json.loads(row["labels"])
    for key in _COLUMN_LABELS:  # hosts that enrolled without an inventory have only columns
        if row[key] is not None:
            labels.setdefault(key, row[key])
    return labels


def _descendants(group: str, children: dict[str, list[str]]) -> set[str]:
    found: set[str] = set()
    pending = [group]
    while pending:
        name = pending.pop()
        if name not in found:
            found.add(name)
            pending.extend(children.get(name, []))
    return found


PLAYBOOK_SUFFIXES = (".yml", ".yaml")


def resolve_playbook(ctx: HubContext, set_name: str | None, name: str) -> tuple[PlaybookSet, Path]:
    """The current version of set `set_name` (default "aiorch") and `name` inside it."""
    pset = playbook_sets.resolve(ctx, set_name)
    return pset, playbook_path(pset.root, name, pset.name)


def playbook_path(root: Path, name: str, set_name: str = playbook_sets.DEFAULT_SET) -> Path:
    """`name` inside the set's folder `root`: relative, no `..`, an existing .yml/.yaml file
    (a symlink may not lead out of it)."""
    rel = PurePosixPath(name.strip())
    if not name.strip() or rel.is_absolute() or ".." in rel.parts:
        raise InvalidInput(f"playbook {name!r}: give a path inside playbook set {set_name}")
    if rel.suffix not in PLAYBOOK_SUFFIXES:
        raise InvalidInput(f"playbook {name!r}: must be a .yml or .yaml file")
    root = root.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise InvalidInput(f"playbook {name!r} not found in playbook set {set_name}")
    return path
