"""`aiorch bundle keygen|create|verify` from the command line: a bundle from a built site
repository and operator content verifies (exit 0); a tampered one fails in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiorch.bundle.cli import bundle_app, parse_size
from aiorch.errors import UserError

runner = CliRunner()


def _inputs(tmp_path: Path) -> dict[str, Path]:
    """Operator inputs, written once per test: later bundles see what the test changed."""
    repo, coll = tmp_path / "repo", tmp_path / "ansible_collections/community/general/plugins"
    paths = {"repo": repo, "ops": tmp_path / "ops", "coll": coll.parents[2]}
    paths |= {"model": tmp_path / "weights", "image": tmp_path / "payload.tar"}
    if repo.exists():
        return paths
    (repo / "debs").mkdir(parents=True)
    (repo / "debs/chrony_4.3_amd64.deb").write_bytes(b"deb" * 1000)
    (repo / "wheels").mkdir()
    (repo / "wheels/psutil-5.9-cp311-abi3-manylinux_2_17_aarch64.whl").write_bytes(b"whl")
    ops = tmp_path / "ops"
    (ops / "roles/ntp/tasks").mkdir(parents=True)
    (ops / "site.yml").write_text("- hosts: all\n")
    (ops / "roles/ntp/tasks/main.yml").write_text("- debug: {}\n")
    coll.mkdir(parents=True)
    (coll / "x.py").write_text("# module\n")
    model = tmp_path / "weights"
    model.mkdir()
    (model / "model.bin").write_bytes(os.urandom(5000))
    (tmp_path / "payload.tar").write_bytes(os.urandom(2000))
    return paths


def _keygen(tmp_path: Path) -> Path:
    result = runner.invoke(bundle_app, ["keygen", "--out", str(tmp_path / "key")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "key/bundle.key").stat().st_mode & 0o777 == 0o600
    return tmp_path / "key"


def _head(tmp_path: Path, key: Path, out: str) -> list[str]:
    return ["create", "--out", str(tmp_path / out), "--key", str(key / "bundle.key"), "--no-hub"]


def _create(tmp_path: Path, key: Path, out: str, *extra: str) -> None:
    i = _inputs(tmp_path)
    args = [*_head(tmp_path, key, out), "--repo", str(i["repo"]), "--playbooks", f"ops={i['ops']}"]
    args += ["--collection", str(i["coll"]), "--model", f"tiny={i['model']}"]
    args += ["--image", f"localhost/payload:1={i['image']}", *extra]
    result = runner.invoke(bundle_app, args)
    assert result.exit_code == 0, result.output


def test_create_then_verify_exits_0_and_the_manifest_types_the_components(tmp_path: Path) -> None:
    key = _keygen(tmp_path)
    _create(tmp_path, key, "b", "--version", "3", "--part-size", "4K")
    result = runner.invoke(
        bundle_app, ["verify", str(tmp_path / "b"), "--trust", str(key / "bundle.pub")]
    )
    assert result.exit_code == 0, result.output
    assert "intact, version 3" in result.stdout
    manifest = json.loads((tmp_path / "b/manifest.json").read_text())
    comps = manifest["components"]
    assert [s["name"] for s in comps["playbook_sets"]] == ["aiorch", "ops"]
    assert comps["collections"] == [{"root": "collections/ansible_collections/community/general"}]
    assert comps["images"][0]["ref"] == "localhost/payload:1"
    assert comps["models"][0]["files"] == ["models/tiny/model.bin"]
    paths = {f["path"] for f in manifest["files"]}
    assert "playbooks/aiorch/site.yml" in paths and "repo/debs/chrony_4.3_amd64.deb" in paths
    assert manifest["parts"] and not (tmp_path / "b/blobs").exists()


def test_verify_of_a_tampered_bundle_fails_in_one_line(tmp_path: Path) -> None:
    key = _keygen(tmp_path)
    _create(tmp_path, key, "b")
    (tmp_path / "b/blobs/sha256/extra").write_text("x")
    result = runner.invoke(
        bundle_app, ["verify", str(tmp_path / "b"), "--trust", str(key / "bundle.pub")]
    )
    assert result.exit_code == 1
    assert result.stderr == "aiorch: error: not in the manifest: blobs/sha256/extra\n"


def test_a_delta_from_the_cli_ships_only_the_changed_model(tmp_path: Path) -> None:
    key = _keygen(tmp_path)
    _create(tmp_path, key, "v1", "--version", "1")
    (tmp_path / "weights/model.bin").write_bytes(b"retrained")
    since = ["--since", str(tmp_path / "v1/manifest.json"), "--trust", str(key / "bundle.pub")]
    _create(tmp_path, key, "v2", "--version", "2", *since)
    shipped = list((tmp_path / "v2/blobs/sha256").iterdir())
    assert [p.read_bytes() for p in shipped] == [b"retrained"]
    verify = ["verify", str(tmp_path / "v2"), "--trust", str(key / "bundle.pub")]
    alone = runner.invoke(bundle_app, verify)
    assert alone.exit_code == 1 and "its base is not present: import it first" in alone.stderr
    with_base = runner.invoke(bundle_app, [*verify, "--base", str(tmp_path / "v1")])
    assert with_base.exit_code == 0, with_base.output
    result = runner.invoke(
        bundle_app,
        [*_head(tmp_path, key, "v0"), "--repo", str(tmp_path / "repo"), "--version", "1", *since],
    )
    assert result.exit_code == 1
    assert "version 1 must be greater than the base's 1" in result.stderr


def test_create_refuses_an_existing_bundle_dir_in_one_line(tmp_path: Path) -> None:
    key = _keygen(tmp_path)
    _create(tmp_path, key, "b")
    result = runner.invoke(
        bundle_app,
        [*_head(tmp_path, key, "b"), "--repo", str(tmp_path / "repo")],
    )
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "already exists" in result.stderr


@pytest.mark.parametrize(("text", "size"), [("4G", 4 << 30), ("700M", 700 << 20), ("512", 512)])
def test_part_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_bad_part_size_is_refused() -> None:
    with pytest.raises(UserError, match="expected a size"):
        parse_size("lots")
