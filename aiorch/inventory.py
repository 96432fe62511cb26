"""Ansible inventories in and out: parse a YAML or INI file into hosts and groups, render it back.

Ansible itself does the parsing (through aiorch.ansible.runner), so what aiorch stores is what
a playbook run will see. Conventions, read from each host's merged vars:

- `aiorch_site`, `aiorch_role`, `aiorch_region`: the host's site, role and region;
- `aiorch_labels`: a mapping of extra labels (scalar values, kept as strings).

A host's `labels` are its `aiorch_labels` plus `site`, `role` and `region` when set. Like any
Ansible var, `aiorch_labels` set on a host replaces (does not merge with) its groups' value.

The implicit groups `all` and `ungrouped` are kept only when they carry vars, and then with
no hosts or children: every host is in `all`, and `ungrouped` holds the hosts in no group.
"""

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from aiorch.ansible.runner import TIMEOUT_S, list_inventory
from aiorch.errors import InvalidInput

IMPLICIT_GROUPS = ("all", "ungrouped")
LABEL_FIELDS = ("site", "role", "region")
_YAML_SUFFIXES = (".yml", ".yaml")
MAX_EXPANDED_NODES = 500_000  # YAML values once aliases are expanded: ~50,000 hosts with vars
MAX_HOST_NAME = 253


class InventoryHost(BaseModel):
    name: str
    vars: dict[str, Any] = Field(default_factory=dict, description="host-only vars")
    groups: list[str] = Field(default_factory=list, description="direct groups, sorted")
    site: str | None = None
    role: str | None = None
    region: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class InventoryGroup(BaseModel):
    name: str
    vars: dict[str, Any] = Field(default_factory=dict)
    children: list[str] = Field(default_factory=list)
    hosts: list[str] = Field(default_factory=list)


class Inventory(BaseModel):
    hosts: dict[str, InventoryHost]
    groups: dict[str, InventoryGroup]


def parse_inventory(content: str, filename: str) -> Inventory:
    """Parse one static inventory file: YAML if `filename` ends in .yml/.yaml, INI otherwise."""
    if not content.strip():
        raise InvalidInput(f"{filename}: inventory has no hosts (the file is empty)")
    if content.startswith("#!"):
        # The INI parser would happily read `ls` as a host named ls.
        raise InvalidInput(
            f"{filename}: looks like a script (starts with #!); "
            "only static YAML or INI inventories are accepted"
        )
    name = _local_name(filename)
    if name.endswith(_YAML_SUFFIXES):
        _check_expanded_size(content, filename)
    deadline = time.monotonic() + TIMEOUT_S  # one deadline for both runs
    with tempfile.TemporaryDirectory(prefix="aiorch-inventory-") as tmp:
        path = Path(tmp) / name
        path.write_text(content, encoding="utf-8")
        with ThreadPoolExecutor(max_workers=2) as pool:  # two ~1 s runs of ansible-inventory
            exported = pool.submit(list_inventory, path, export=True, deadline=deadline)
            merged = pool.submit(list_inventory, path, export=False, deadline=deadline)
            return _inventory(exported.result(), merged.result(), filename)


def _check_expanded_size(content: str, filename: str) -> None:
    """Aliases (`<<: *common` and the like) are fine, but a few hundred bytes of nested ones
    expand into millions of values (an alias bomb) in ansible-inventory: count the document
    as expanded, which composing never does, and refuse it past MAX_EXPANDED_NODES.
    Syntax errors are left to ansible-inventory to report."""
    try:
        roots = list(yaml.compose_all(content, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return
    except RecursionError:
        raise InvalidInput(f"{filename}: the YAML document is nested too deeply") from None
    sizes: dict[int, int] = {}
    entered: set[int] = set()  # nodes whose children are being sized: the current path
    stack: list[tuple[yaml.Node, bool]] = [(root, False) for root in roots]
    while stack:
        node, children_sized = stack.pop()
        if id(node) in sizes:
            continue
        children = _children(node)
        if not children_sized:
            if id(node) in entered:
                raise InvalidInput(f"{filename}: a YAML alias refers to a node that contains it")
            entered.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
        if sizes[id(node)] > MAX_EXPANDED_NODES:
            mark = node.start_mark
            raise InvalidInput(
                f"{filename}: line {mark.line + 1}: YAML aliases expand this inventory to "
                f"more than {MAX_EXPANDED_NODES:,} values"
            )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def render_inventory(inv: Inventory) -> str:
    """A YAML inventory (`all: children:` form) for ansible-inventory and ansible-playbook.

    Each group and each host's vars are written once, at their first place in a walk from the
    top-level groups; later mentions are bare names.
    """
    members = {name: set(group.hosts) for name, group in inv.groups.items()}
    for host in inv.hosts.values():
        for group_name in host.groups:
            members.setdefault(group_name, set()).add(host.name)
    child_names = {child for group in inv.groups.values() for child in group.children}
    hosts_written: set[str] = set()
    groups_written: set[str] = set()

    def host_entry(name: str) -> dict[str, Any] | None:
        host = inv.hosts.get(name)
        if name in hosts_written or host is None or not host.vars:
            return None
        hosts_written.add(name)
        return host.vars

    def group_entry(name: str) -> dict[str, Any] | None:
        if name in groups_written:
            return None
        groups_written.add(name)
        group = inv.groups.get(name, InventoryGroup(name=name))
        entry: dict[str, Any] = {}
        if group.vars:
            entry["vars"] = group.vars
        if members.get(name):
            entry["hosts"] = {host: host_entry(host) for host in sorted(members[name])}
        if group.children:
            entry["children"] = {child: group_entry(child) for child in sorted(group.children)}
        return entry

    root: dict[str, Any] = {}
    if "all" in inv.groups and inv.groups["all"].vars:
        root["vars"] = inv.groups["all"].vars
    loose = sorted(name for name, host in inv.hosts.items() if not host.groups)
    if loose:
        root["hosts"] = {name: host_entry(name) for name in loose}
    tops = sorted(name for name in members if name != "all" and name not in child_names)
    if tops:
        root["children"] = {name: group_entry(name) for name in tops}
    return yaml.dump({"all": root}, Dumper=_InventoryDumper, sort_keys=False, allow_unicode=True)


class _InventoryDumper(yaml.SafeDumper):
    """Writes `name:` rather than `name: null` for bare mentions, and never uses anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


_InventoryDumper.add_representer(
    type(None), lambda dumper, _: dumper.represent_scalar("tag:yaml.org,2002:null", "")
)


def _local_name(filename: str) -> str:
    """A safe temp file name that keeps the user's (it shows in ansible's messages).

    Its suffix picks the parser in aiorch.ansible.runner: .yml/.yaml is YAML, anything else INI.
    """
    path = Path(Path(filename).name)
    suffix = path.suffix.lower() if path.suffix.lower() in (".yml", ".yaml") else path.suffix
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.stem + suffix)
    return safe.lstrip(".") or "inventory"


def _inventory(exported: dict[str, Any], merged: dict[str, Any], filename: str) -> Inventory:
    """Build the model from `--list --export` (where vars were written) and `--list` (merged)."""
    host_vars: dict[str, dict[str, Any]] = exported.get("_meta", {}).get("hostvars", {})
    merged_vars: dict[str, dict[str, Any]] = merged.get("_meta", {}).get("hostvars", {})
    listed = {name: body for name, body in exported.items() if name != "_meta"}
    # Groups with neither hosts nor vars appear only in their parent's children.
    names = set(listed) | {child for body in listed.values() for child in body.get("children", [])}
    groups: dict[str, InventoryGroup] = {}
    for name in sorted(names):
        body = listed.get(name, {})
        if name in IMPLICIT_GROUPS:
            if body.get("vars"):
                groups[name] = InventoryGroup(name=name, vars=body["vars"])
            continue
        groups[name] = InventoryGroup(
            name=name,
            vars=body.get("vars", {}),
            children=sorted(body.get("children", [])),
            hosts=sorted(body.get("hosts", [])),
        )
    host_names = set(host_vars).union(*(body.get("hosts", []) for body in listed.values()))
    # Group vars alone are an inventory too: a site's settings before its hosts exist (its
    # machines join it when their agents enroll).
    if not host_names and not any(group.vars for group in groups.values()):
        raise InvalidInput(f"{filename}: inventory has no hosts and no group vars")
    memberships: dict[str, list[str]] = {}
    for group in groups.values():  # sorted by name, so each host's list comes out sorted
        for host in group.hosts:
            memberships.setdefault(host, []).append(group.name)
    hosts = {}
    for name in sorted(host_names):
        _check_host_name(filename, name)
        hosts[name] = InventoryHost(
            name=name,
            vars=host_vars.get(name, {}),
            groups=memberships.get(name, []),
            **_labels(f"{filename}: host {name}", merged_vars.get(name, {})),
        )
    return Inventory(hosts=hosts, groups=groups)


def host_name_problem(name: str) -> str | None:
    """What is wrong with `name` as a host name, or None: the one rule for inventory import
    and enrollment. Host names end up in URLs, logs, CLI tables and the exported inventory:
    one printable token of DNS length, without '/', and not a name Ansible reserves for a
    group (a host named `all` would break the exported inventory)."""
    if len(name) > MAX_HOST_NAME:
        return f"is longer than {MAX_HOST_NAME} characters"
    if not name or any(c.isspace() for c in name) or not name.isprintable() or "/" in name:
        return "must be non-empty, without spaces, '/' or control characters"
    if name in IMPLICIT_GROUPS:
        return f"is reserved by Ansible for a group ({', '.join(IMPLICIT_GROUPS)})"
    return None


def _check_host_name(filename: str, name: str) -> None:
    problem = host_name_problem(name)
    if problem is not None:
        raise InvalidInput(f"{filename}: host name {name[:64]!r} {problem}")


def _labels(where: str, merged: dict[str, Any]) -> dict[str, Any]:
    """site, role, region and labels from a host's merged vars; `where` prefixes errors."""
    raw = merged.get("aiorch_labels") or {}
    if not isinstance(raw, dict):
        raise InvalidInput(
            f"{where}: aiorch_labels must be a mapping of label names to values, not {_kind(raw)}"
        )
    labels = {str(key): _scalar(where, f"aiorch_labels.{key}", value) for key, value in raw.items()}
    fields: dict[str, Any] = {}
    for field in LABEL_FIELDS:
        if merged.get(f"aiorch_{field}") is not None:
            value = _scalar(where, f"aiorch_{field}", merged[f"aiorch_{field}"])
            fields[field] = labels[field] = value
    return {**fields, "labels": labels}


def _scalar(where: str, field: str, value: Any) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise InvalidInput(f"{where}: {field} must be a string, number or boolean, not {_kind(value)}")


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "empty" if value is None else type(value).__name__
