"""Playbook sets: versions kept by content, runs that name a set and record its digest, and a
set's own collections found by its runs (a tiny `acme.tools` collection built here)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiorch.ansible.collections import install_collections
from aiorch.ansible.runner import own_tool
from aiorch.errors import InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import playbook_sets, runs
from tests.fixtures_hub import HubProcess, make_token

PLAYBOOKS = Path(__file__).parent / "playbooks"
ADMIN = "user:test-admin"

STAMP_MODULE = """
from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={"path": {"type": "str", "required": True},
                                          "text": {"type": "str", "required": True}})
    path, text = module.params["path"], module.params["text"]
    try:
        with open(path) as handle:
            same = handle.read() == text
    except FileNotFoundError:
        same = False
    if not same:
        with open(path, "w") as handle:
            handle.write(text)
    module.exit_json(changed=not same, stamped=text)


if __name__ == "__main__":
    main()
"""


def acme_collection(where: Path) -> Path:
    """The source folder of collection acme.tools, with one module: acme.tools.stamp."""
    root = where / "acme-tools"
    (root / "plugins" / "modules").mkdir(parents=True)
    galaxy = {"namespace": "acme", "name": "tools", "version": "1.0.0", "readme": "README.md",
              "authors": ["aiorch tests"]}  # fmt: skip
    (root / "galaxy.yml").write_text(yaml.safe_dump(galaxy))
    (root / "README.md").write_text("acme.tools\n")
    (root / "meta").mkdir()
    (root / "meta" / "runtime.yml").write_text("requires_ansible: '>=2.16'\n")
    (root / "plugins" / "modules" / "stamp.py").write_text(STAMP_MODULE)
    return root


def ops_set(where: Path, text: str = "v1") -> Path:
    """An operator's set: a playbook in a subfolder using a role of the set and acme.tools."""
    root = where / f"ops-{text}"
    (root / "plays").mkdir(parents=True)
    (root / "roles" / "stamper" / "tasks").mkdir(parents=True)
    (root / "roles" / "stamper" / "tasks" / "main.yml").write_text(
        textwrap.dedent(f"""\
        - name: Stamp the target's file
          acme.tools.stamp:
            path: "{{{{ target_dir }}}}/stamp"
            text: {text}
        """)
    )
    (root / "plays" / "stamp.yml").write_text(
        "- name: Stamp\n  hosts: all\n  gather_facts: false\n  roles: [stamper]\n"
    )
    return root


def local_host(ctx: HubContext, name: str, target: Path) -> None:
    hostvars = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "target_dir": str(target),
    }
    row = {"name": name, "vars": json.dumps(hostvars), "created_at": 0, "updated_at": 0}
    ctx.store.write(lambda db: db.table("hosts").insert(row))


@pytest.fixture
def ctx(make_context: Callable[..., HubContext]) -> HubContext:
    return make_context(playbooks_dir=PLAYBOOKS, preflight_timeout_s=1)


def finished(ctx: HubContext, run: dict[str, Any]) -> dict[str, Any]:
    runs.wait(run["id"], 120)
    return runs.get_run(ctx, run["id"])


# ---- versions --------------------------------------------------------------------------------


def test_two_versions_of_a_set_are_both_kept_and_the_last_registered_is_current(
    ctx: HubContext, tmp_path: Path
):
    first = playbook_sets.register(ctx, "ops", ops_set(tmp_path, "v1"), None, ADMIN)
    second = playbook_sets.register(ctx, "ops", ops_set(tmp_path, "v2"), None, ADMIN)
    assert first != second and first.startswith("sha256:")
    listed = [s for s in playbook_sets.list_sets(ctx) if s["name"] == "ops"]
    assert [(s["digest"], s["current"]) for s in listed] == [(second, True), (first, False)]
    for digest in (first, second):  # both versions' files stay on disk
        folder = ctx.settings.data_dir / "content" / "playbooks" / digest.removeprefix("sha256:")
        assert (folder / "plays" / "stamp.yml").is_file()
    assert playbook_sets.resolve(ctx, "ops").digest == second
    # The same content again: no new version, and it is current again (a downgrade import).
    assert playbook_sets.register(ctx, "ops", ops_set(tmp_path / "again", "v1"), None, ADMIN)
    assert playbook_sets.resolve(ctx, "ops").digest == first
    assert len([s for s in playbook_sets.list_sets(ctx) if s["name"] == "ops"]) == 2


def test_a_stored_set_does_not_change_when_its_source_folder_does(ctx: HubContext, tmp_path: Path):
    source = ops_set(tmp_path)
    digest = playbook_sets.register(ctx, "ops", source, None, ADMIN)
    (source / "plays" / "stamp.yml").write_text("- hosts: all\n  tasks: []\n")
    stored = playbook_sets.resolve(ctx, "ops")
    assert playbook_sets.set_digest(stored.root)[0] == digest
    assert "roles: [stamper]" in (stored.root / "plays" / "stamp.yml").read_text()


def test_the_aiorch_set_is_the_hubs_own_folder_until_one_is_imported(
    ctx: HubContext, tmp_path: Path
):
    builtin = playbook_sets.resolve(ctx)
    assert (builtin.name, builtin.source, builtin.root) == ("aiorch", "builtin", PLAYBOOKS)
    [listed] = playbook_sets.list_sets(ctx)
    assert (listed["digest"], listed["source"]) == (builtin.digest, "builtin")
    digest = playbook_sets.register(ctx, "aiorch", PLAYBOOKS, None, ADMIN)
    imported = playbook_sets.resolve(ctx)
    assert (imported.source, imported.digest) == ("imported", digest)
    assert digest == builtin.digest  # the same files are the same content
    assert [s["source"] for s in playbook_sets.list_sets(ctx)] == ["imported"]


@pytest.mark.parametrize("name", ["", "Ops", "../x", "-x", "a" * 65, "o/p"])
def test_bad_set_names_are_refused(ctx: HubContext, tmp_path: Path, name: str):
    with pytest.raises(InvalidInput, match="playbook set name"):
        playbook_sets.register(ctx, name, ops_set(tmp_path), None, ADMIN)


def test_a_symlink_out_of_the_set_is_refused_and_nothing_is_stored(ctx: HubContext, tmp_path: Path):
    source = ops_set(tmp_path)
    (source / "secret.yml").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match="symlinks are not allowed"):
        playbook_sets.register(ctx, "ops", source, None, ADMIN)
    assert [s["name"] for s in playbook_sets.list_sets(ctx)] == ["aiorch"]
    assert list((ctx.settings.data_dir / "content" / "playbooks").iterdir()) == []


# ---- runs ------------------------------------------------------------------------------------


def test_unknown_set_and_unknown_playbook_are_refused_naming_them(ctx: HubContext, tmp_path: Path):
    with pytest.raises(InvalidInput, match="no playbook set named 'nope'"):
        runs.start_run(ctx, runs.RunRequest(playbook="noop.yml", playbook_set="nope"), ADMIN)
    playbook_sets.register(ctx, "ops", ops_set(tmp_path), None, ADMIN)
    with pytest.raises(InvalidInput, match=r"'noop\.yml' not found in playbook set ops"):
        runs.start_run(ctx, runs.RunRequest(playbook="noop.yml", playbook_set="ops"), ADMIN)
    with pytest.raises(InvalidInput, match="inside playbook set ops"):
        runs.start_run(ctx, runs.RunRequest(playbook="../../noop.yml", playbook_set="ops"), ADMIN)


def test_a_run_of_a_set_finds_its_collection_and_records_the_digest(
    ctx: HubContext, tmp_path: Path
):
    tree = install_collections([acme_collection(tmp_path)], tmp_path / "installed")
    digest = playbook_sets.register(ctx, "ops", ops_set(tmp_path), tree, ADMIN)
    (tmp_path / "t1").mkdir()
    local_host(ctx, "local1", tmp_path / "t1")
    request = runs.RunRequest(playbook="plays/stamp.yml", playbook_set="ops")
    run = finished(ctx, runs.start_run(ctx, request, ADMIN))
    assert run["status"] == "successful", run["message"]
    assert (run["playbook_set"], run["playbook_set_digest"]) == ("ops", digest)
    assert (tmp_path / "t1" / "stamp").read_text() == "v1"
    assert run["recap"]["local1"]["changed"] == 1
    again = finished(ctx, runs.start_run(ctx, request, ADMIN))
    assert again["recap"]["local1"]["changed"] == 0


def test_without_its_collections_the_same_playbooks_cannot_resolve_the_module(
    ctx: HubContext, tmp_path: Path
):
    playbook_sets.register(ctx, "bare", ops_set(tmp_path), None, ADMIN)
    (tmp_path / "t1").mkdir()
    local_host(ctx, "local1", tmp_path / "t1")
    request = runs.RunRequest(playbook="plays/stamp.yml", playbook_set="bare")
    run = finished(ctx, runs.start_run(ctx, request, ADMIN))
    assert run["status"] == "failed"
    assert "acme.tools.stamp" in (run["message"] or "")
    assert not (tmp_path / "t1" / "stamp").exists()


def test_default_runs_use_the_aiorch_set_and_record_its_digest(ctx: HubContext, tmp_path: Path):
    (tmp_path / "t1").mkdir()
    local_host(ctx, "local1", tmp_path / "t1")
    run = finished(ctx, runs.start_run(ctx, runs.RunRequest(playbook="noop.yml"), ADMIN))
    assert run["status"] == "successful", run["message"]
    assert run["playbook_set"] == "aiorch"
    assert run["playbook_set_digest"] == playbook_sets.set_digest(PLAYBOOKS)[0]


# ---- collections -----------------------------------------------------------------------------


def test_collections_install_from_a_tarball_offline(tmp_path: Path):
    source = acme_collection(tmp_path)
    subprocess.run(
        [own_tool("ansible-galaxy"), "collection", "build", str(source), "--output-path",
         str(tmp_path)], check=True, capture_output=True,
    )  # fmt: skip
    tree = install_collections([tmp_path / "acme-tools-1.0.0.tar.gz"], tmp_path / "out")
    assert (tree / "ansible_collections/acme/tools/plugins/modules/stamp.py").is_file()
    assert (tree / "ansible_collections/acme/tools/MANIFEST.json").is_file()


def test_a_requirements_file_needs_a_reachable_galaxy_server(tmp_path: Path):
    requirements = tmp_path / "requirements.yml"
    requirements.write_text("collections:\n  - name: community.general\n")
    with pytest.raises(InvalidInput, match="needs a reachable Galaxy server"):
        install_collections([requirements], tmp_path / "out")


def test_something_that_is_no_collection_is_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InvalidInput, match=r"notes.txt: give a tarball"):
        install_collections([tmp_path / "notes.txt"], tmp_path / "out")


# ---- over the API and the CLI ----------------------------------------------------------------


@pytest.mark.e2e
def test_sets_imported_through_the_hub_run_by_name_and_only_a_global_admin_imports(
    hub: HubProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("COLUMNS", "250")  # `runs show` prints the whole digest on one line
    source = ops_set(tmp_path)
    collection = acme_collection(tmp_path)
    target = tmp_path / "target"
    target.mkdir()
    inventory = tmp_path / "hosts.yml"
    hostvars = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                "target_dir": str(target)}  # fmt: skip
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"local1": hostvars}}}))
    hub.cli("inventory", "import", str(inventory))
    with hub.client(hub.admin_token) as admin:
        viewer = make_token(admin, "viewer")
        body = {"name": "ops", "path": str(source), "collections": [str(collection)]}
        with hub.client(viewer) as client:
            assert client.post("/playbook-sets", json=body).status_code == 403
            assert client.get("/playbook-sets").status_code == 200
        made = hub.cli("playbooks", "import", "ops", str(source), "--collection", str(collection))
        digest = made.stdout.split()[-1]
        refused = admin.post("/runs", json={"playbook": "plays/stamp.yml", "playbook_set": "no"})
        assert refused.status_code == 422 and "no playbook set named 'no'" in refused.text
        missing = admin.post("/runs", json={"playbook": "gone.yml", "playbook_set": "ops"})
        assert missing.status_code == 422 and "'gone.yml' not found" in missing.text
        bad_path = admin.post("/playbook-sets", json={**body, "path": "relative/dir"})
        assert bad_path.status_code == 422
        data_dir = admin.post("/playbook-sets", json={**body, "path": str(hub.data_dir)})
        assert data_dir.status_code == 422 and "the hub's data dir" in data_dir.text
    result = hub.cli("provision", "--set", "ops", "plays/stamp.yml", "--output", "json")
    run = json.loads(result.stdout)
    assert (run["status"], run["playbook_set"], run["playbook_set_digest"]) == (
        "successful", "ops", digest,
    )  # fmt: skip
    assert (target / "stamp").read_text() == "v1"
    shown = hub.cli("runs", "show", run["id"]).stdout
    assert "playbook_set_digest" in shown and digest in shown
    listed = hub.cli_json("playbooks", "list")
    assert {(s["name"], s["current"]) for s in listed} == {("aiorch", True), ("ops", True)}
    assert next(s for s in listed if s["name"] == "ops")["collections"] is True
