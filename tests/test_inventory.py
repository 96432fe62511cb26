"""Inventory import and export, checked against the real ansible-inventory from the venv."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from aiorch.ansible import runner
from aiorch.errors import InvalidInput
from aiorch.inventory import Inventory, parse_inventory, render_inventory

EXAMPLE = Path(__file__).resolve().parents[1] / "inventories" / "example"
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"

# Loose hosts, vars on `ungrouped`, an empty group, a group with two parents, a host in two
# groups, nested and template-looking vars: the corners of rendering.
CORNERS_INI = """\
loose1 foo=bar
loose2
[ungrouped:vars]
u=1
[empty]
[a]
h1 x=1
h2
[b]
h1
[shared]
h3
[p1:children]
shared
empty
[p2:children]
shared
[p2:vars]
v={"nested": [1, 2, {"k": None}]}
s='{{ inventory_hostname }}'
t="yes"
"""


@pytest.fixture(scope="module")
def example_yaml() -> Inventory:
    return parse_inventory((EXAMPLE / "hosts.yml").read_text(), "hosts.yml")


@pytest.fixture(scope="module")
def example_ini() -> Inventory:
    return parse_inventory((EXAMPLE / "hosts.ini").read_text(), "hosts.ini")


def ansible_list(path: Path, home: Path) -> dict[str, Any]:
    """Plain `ansible-inventory -i PATH --list` (default plugins and settings), with member
    lists sorted since their order follows the file."""
    out = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", path, "--list"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "ANSIBLE_HOME": str(home)},
    ).stdout
    listed: dict[str, Any] = json.loads(out)
    for name, body in listed.items():
        if name != "_meta":
            listed[name] = {
                key: sorted(value) if key != "vars" else value for key, value in body.items()
            }
    return listed


def test_example_yaml_and_ini_parse_to_the_same_inventory(example_yaml, example_ini):
    assert example_yaml == example_ini
    assert sorted(example_yaml.hosts) == [
        "dc1-h100-01",
        "dc1-h100-02",
        "dc1-l40s-01",
        "dc1-l40s-02",
        "edge1-box-01",
        "edge1-box-02",
        "edge2-box-01",
        "edge2-box-02",
    ]
    assert sorted(example_yaml.groups) == [
        "all",
        "datacenter",
        "dc1",
        "edge",
        "edge1",
        "edge2",
        "edge_boxes",
        "gpu_h100",
        "gpu_l40s",
    ]


def test_labels_come_from_group_vars_inherited_through_children(example_yaml):
    h100 = example_yaml.hosts["dc1-h100-01"]
    assert (h100.site, h100.role, h100.region) == ("dc1", "gpu_server", "eu")
    assert h100.labels == {
        "gpu": "h100",
        "gpu_count": "8",
        "gpu_memory": "80GB",
        "site": "dc1",
        "role": "gpu_server",
        "region": "eu",
    }
    sites = {name: (h.site, h.region, h.role) for name, h in example_yaml.hosts.items()}
    assert sites["edge1-box-02"] == ("edge1", "eu", "edge")
    assert sites["edge2-box-01"] == ("edge2", "us", "edge")
    assert example_yaml.hosts["edge2-box-01"].labels["gpu"] == "jetson-orin"


def test_vars_stay_where_they_were_written(example_yaml):
    assert example_yaml.hosts["edge2-box-02"].vars == {
        "ansible_host": "203.0.113.12",
        "ansible_port": 2222,
    }
    assert example_yaml.hosts["edge2-box-02"].groups == ["edge2", "edge_boxes"]
    assert example_yaml.groups["gpu_h100"].vars["aiorch_nvidia_driver_branch"] == "570"
    assert example_yaml.groups["dc1"].children == ["gpu_h100", "gpu_l40s"]
    assert example_yaml.groups["all"].vars["aiorch_storage_model_cache"] == "/srv/models"
    assert example_yaml.groups["all"].children == example_yaml.groups["all"].hosts == []


def test_round_trip_through_render_is_exact(example_ini):
    assert parse_inventory(render_inventory(example_ini), "export.yml") == example_ini


def test_rendered_inventory_lists_like_the_original_in_ansible(example_ini, tmp_path):
    exported = tmp_path / "export.yml"
    exported.write_text(render_inventory(example_ini))
    original = ansible_list(EXAMPLE / "hosts.ini", tmp_path)
    assert ansible_list(exported, tmp_path) == original
    assert original["_meta"]["hostvars"]["dc1-h100-01"]["aiorch_site"] == "dc1"


def test_round_trip_keeps_loose_hosts_empty_groups_and_shared_children():
    corners = parse_inventory(CORNERS_INI, "corners.ini")
    assert corners.hosts["loose1"].groups == []
    assert corners.groups["ungrouped"].vars == {"u": 1}
    assert corners.groups["p1"].children == ["empty", "shared"]
    assert parse_inventory(render_inventory(corners), "corners.yml") == corners


def test_parsing_leaves_no_temp_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    parse_inventory("[g]\nh1\n", "hosts")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "filename", "words"),
    [
        ("all:\n  hosts:\n    a: [\n", "hosts.yml", ["hosts.yml", "not a valid YAML"]),
        ("[gpu]\nh1 ansible_host\n", "hosts.ini", ["not a valid INI", "key=value"]),
        ("all:\n  children:\n    gpu: {}\n", "hosts.yml", ["no hosts and no group vars"]),
        ("", "hosts.yml", ["no hosts"]),
        ("[g]\nh1\n[g:vars]\naiorch_labels={'gpu': ['h100']}\n", "x", ["h1", "aiorch_labels.gpu"]),
        ('all:\n  hosts:\n    "bad host":\n', "hosts.yml", ["host name", "bad host"]),
        ("#!/bin/sh\necho '{}'\n", "inventory.sh", ["script"]),
    ],
    ids=[
        "malformed-yaml",
        "malformed-ini",
        "no-hosts",
        "empty",
        "bad-label",
        "bad-host-name",
        "script",
    ],
)
def test_bad_inventory_is_invalid_input_naming_the_problem(content, filename, words):
    with pytest.raises(InvalidInput) as caught:
        parse_inventory(content, filename)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_group_vars_alone_are_an_inventory_for_hosts_that_join_later():
    parsed = parse_inventory("all:\n  vars:\n    ansible_user: aiorch\n", "hosts.yml")
    assert parsed.hosts == {}
    assert parsed.groups["all"].vars == {"ansible_user": "aiorch"}


def alias_bomb(levels: int = 6, width: int = 10) -> str:
    """Each level lists the one before `width` times: width**levels strings from ~330 bytes."""
    lines = ["all:", "  hosts:", "    h1:", "  vars:", "    l0: &l0 x"]
    for level in range(1, levels + 1):
        items = ",".join([f"*l{level - 1}"] * width)
        lines.append(f"    l{level}: &l{level} [{items}]")
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_at_once_naming_the_line():
    bomb = alias_bomb()
    assert len(bomb) < 400
    started = time.monotonic()
    with pytest.raises(InvalidInput, match=r"bomb\.yml: line 11: YAML aliases expand .* 500,000"):
        parse_inventory(bomb, "bomb.yml")
    assert time.monotonic() - started < 1, "refused before ansible-inventory runs"


def test_yaml_aliases_that_expand_a_little_are_kept():
    shared = "x-common: &common\n  aiorch_site: dc1\nall:\n  hosts:\n    h1:\n      <<: *common\n"
    assert parse_inventory(shared, "shared.yml").hosts["h1"].site == "dc1"


def test_recursive_yaml_alias_is_refused():
    with pytest.raises(InvalidInput, match="refers to a node that contains it"):
        parse_inventory("all: &loop\n  hosts: {h1: {v: *loop}}\n", "loop.yml")


def test_inventory_parse_writes_no_file_per_output_line(tmp_path, monkeypatch):
    # ansible-runner wrote one event file per line of ansible-inventory's output: about
    # 10,000 for these 1,000 hosts (58,000 for 5,000). Count files this process opens for
    # writing in the temp dir while parsing.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    written = _files_written_under(tmp_path)
    ini = "[gpu]\n" + "".join(
        f"gpu{i:04d} ansible_host=10.0.{i // 250}.{i % 250}\n" for i in range(1000)
    )
    with written:
        inventory = parse_inventory(ini, "big.ini")
    assert len(inventory.hosts) == 1000
    assert written.count <= 2, f"{written.count} files written to parse one inventory"


def test_inventory_listing_over_the_output_cap_is_refused(monkeypatch):
    # An INI range expands inside ansible-inventory; the listing it prints is capped.
    monkeypatch.setattr(runner, "MAX_OUTPUT", 16 * 1024)
    with pytest.raises(InvalidInput, match="listing is over"):
        parse_inventory("[gpu]\ngpu[0000:1999]\n", "range.ini")


def test_inventory_parse_past_its_deadline_is_refused():
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="did not finish within"):
        runner.list_inventory(EXAMPLE / "hosts.ini", export=False, deadline=time.monotonic())
    assert time.monotonic() - started < 5


def test_host_named_like_an_implicit_group_is_refused():
    with pytest.raises(InvalidInput, match="'all' is reserved"):
        parse_inventory("[g]\nall\n", "hosts.ini")


class _files_written_under:
    """Counts files this process opens for writing under `root` while the block runs (an
    audit hook: it sees ansible-runner's event files, which were written in-process)."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.count = 0
        self.active = False
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or event != "open" or not str(args[0]).startswith(self.root):
            return
        mode, flags = str(args[1] or ""), args[2] if len(args) > 2 else 0
        writing = any(c in mode for c in "wax") or bool(flags & (os.O_WRONLY | os.O_RDWR))
        self.count += writing

    def __enter__(self) -> None:
        self.active = True

    def __exit__(self, *_: object) -> None:
        self.active = False
