"""Escalation paths closed: connection vars are set by global admins only and never by extra
vars; host paths stay under the project's allowed prefixes; secret-looking inventory vars are
sealed at rest and masked for everyone but global admins."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from aiorch.ansible.connection_vars import is_connection_var, is_template
from aiorch.deploy.host_paths import within
from aiorch.errors import Forbidden, Unavailable
from aiorch.hub.context import HubContext
from aiorch.hub.services import (
    agents,
    deployment_views,
    deployments,
    enrollment,
    inventory,
    run_history,
    runs,
)
from aiorch.hub.services.auth import Principal
from edge_agent.identity import csr_pem, new_key
from tests.fixtures_desired import a_workload
from tests.fixtures_hub import HubProcess, make_token
from tests.fixtures_policy import allow_host_paths

PLAYBOOKS = Path(__file__).parent / "playbooks"
ADMIN = Principal("user", "root", "admin")
OPERATOR = Principal("user", "ops", "operator")


@pytest.fixture
def operator(shared_hub: HubProcess, admin: httpx.Client) -> Iterator[httpx.Client]:
    with shared_hub.client(make_token(admin, "operator")) as client:
        yield client


@pytest.fixture
def viewer(shared_hub: HubProcess, admin: httpx.Client) -> Iterator[httpx.Client]:
    with shared_hub.client(make_token(admin, "viewer")) as client:
        yield client


def _import(client: httpx.Client, text: str) -> httpx.Response:
    return client.post("/inventory/import", json={"filename": "hosts.yml", "content": text})


# ---- connection vars --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "connects"),
    [
        ("ansible_connection", True),
        ("ansible_ssh_common_args", True),
        ("ansible_sftp_extra_args", True),
        ("ansible_ssh_executable", True),
        ("ansible_become", True),
        ("ansible_become_exe", True),
        ("ansible_become_flags", True),
        ("ansible_python_interpreter", True),
        ("ansible_shell_executable", True),
        ("ansible_paramiko_proxy_command", True),
        ("ansible_host_key_checking", True),
        ("ANSIBLE_Connection", True),
        ("ansible_host", False),
        ("ansible_port", False),
        ("ansible_user", False),
        ("ansible_ssh_user", False),
        ("aiorch_site", False),
        ("my_ansible_connection", False),
        ("aiorch_hub_ca_file", True),  # a file on the hub the roles copy to hosts
        ("aiorch_site_repo_ca_file", True),
        ("aiorch_site_repo_keyring_file", True),  # the imported release's apt keyring
        ("aiorch_site_repo_release_version", False),
        ("aiorch_site_repo_keyring_path", False),
        ("aiorch_edge_agent_ca_path", False),  # where on the host it goes
    ],
)
def test_connection_vars_are_every_ansible_var_but_where_and_who(name: str, connects: bool):
    assert is_connection_var(name) is connects


@pytest.mark.parametrize(
    ("value", "template"),
    [
        ("{{ x }}", True),
        ("a {% if y %}b{% endif %}", True),
        ("{# note #}", True),
        ({"k": ["plain", {"{{ key }}": 1}]}, True),
        ("plain { braces }", False),
        ({"k": [1, None, True]}, False),
    ],
)
def test_templates_are_found_at_any_depth(value: object, template: bool):
    assert is_template(value) is template


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "all:\n  hosts:\n    cv-host-a:\n      ansible_ssh_common_args: "
            "\"-o ProxyCommand='sh -c id'\"\n",
            "host cv-host-a: ansible_ssh_common_args",
        ),
        (
            "all:\n  children:\n    cv-group:\n      vars: {ansible_become_exe: /tmp/x}\n"
            "      hosts: {cv-host-b: {}}\n",
            "group cv-group: ansible_become_exe",
        ),
        ("all:\n  vars: {ansible_connection: local}\n  hosts: {cv-host-c: {}}\n", "group all"),
        (
            "all:\n  hosts:\n    cv-host-d:\n      aiorch_site: \"{{ lookup('pipe', 'id') }}\"\n",
            "host cv-host-d: aiorch_site",
        ),
        (
            "all:\n  hosts:\n    cv-host-e:\n"
            "      aiorch_labels: {gpu: '{% if 1 %}x{% endif %}'}\n",
            "host cv-host-e: aiorch_labels",
        ),
    ],
    ids=["host-var", "group-var", "all-group", "template", "nested-template"],
)
def test_only_a_global_admin_sets_connection_vars_or_templates_at_import(
    make_context, text: str, named: str
):
    """Importing inventory is a global admin's (authorize() says so first); the import itself
    still refuses connection vars from anyone else, should that rule ever widen."""
    ctx: HubContext = make_context()
    with pytest.raises(Forbidden, match=re.escape(named)):
        inventory.import_inventory(ctx, text, "hosts.yml", OPERATOR)
    host = text.split("cv-host-")[1][0]
    assert inventory.list_hosts(ctx, None) == [], f"a refused import stores nothing ({host})"
    assert inventory.import_inventory(ctx, text, "hosts.yml", ADMIN)["hosts"]


def test_a_project_operator_may_not_import_inventory_at_all(operator: httpx.Client):
    refused = _import(operator, "all:\n  hosts:\n    op-host: {}\n")
    assert refused.status_code == 403 and "global admin" in refused.text


def test_an_operator_may_reimport_connection_vars_unchanged_but_not_change_or_drop_them(
    make_context,
):
    ctx: HubContext = make_context()
    base = "all:\n  hosts:\n    keep-host:\n      ansible_host: 10.0.0.{n}\n"
    with_python = base + "      ansible_python_interpreter: /usr/bin/python3\n"
    inventory.import_inventory(ctx, with_python.format(n=1), "hosts.yml", ADMIN)
    inventory.import_inventory(ctx, with_python.format(n=2), "hosts.yml", OPERATOR)  # where
    host = inventory.get_host(ctx, "keep-host", ADMIN)
    assert host["vars"]["ansible_host"] == "10.0.0.2"
    changed = with_python.replace("/usr/bin/python3", "/bin/sh -c 'id' #")
    for text in (changed.format(n=2), base.format(n=2)):
        with pytest.raises(Forbidden, match="ansible_python_interpreter"):
            inventory.import_inventory(ctx, text, "hosts.yml", OPERATOR)
    host = inventory.get_host(ctx, "keep-host", ADMIN)
    assert host["vars"]["ansible_python_interpreter"] == "/usr/bin/python3"


@pytest.mark.parametrize(
    ("extravars", "named"),
    [
        ({"ansible_connection": "local"}, "ansible_connection"),
        ({"ok": 1, "ansible_become_exe": "/tmp/x"}, "ansible_become_exe"),
        ({"ok": 1, "note": "{{ lookup('pipe', 'id') }}"}, "note"),
        ({"deep": {"list": ["{%- set x = 1 -%}"]}}, "deep"),
    ],
)
def test_run_extra_vars_never_set_connection_vars_or_templates(
    admin: httpx.Client, extravars: dict, named: str
):
    response = admin.post("/runs", json={"playbook": "site.yml", "extravars": extravars})
    assert response.status_code == 422, response.text
    assert f"extra vars {named}:" in response.json()["detail"]
    assert admin.get("/runs").json() == [], "no run was created"


def test_provision_with_a_connection_extra_var_is_a_one_line_error(shared_hub: HubProcess):
    result = shared_hub.cli(
        "provision", "site.yml", "-e", "ansible_ssh_executable=/tmp/evil", check=False
    )
    assert result.returncode != 0
    assert "ansible_ssh_executable" in result.stderr and "Traceback" not in result.stderr


# ---- host paths -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "prefix", "inside"),
    [
        ("/data/x", "/data", True),
        ("/data", "/data", True),
        ("/data/x", "/data/", True),
        ("/data//x/./y/", "/data", True),
        ("/database", "/data", False),
        ("/data-old/x", "/data", False),
        ("/etc", "/data", False),
        ("//data/x", "/data", True),
        ("/anything", "/", True),
        ("/data/x", "data", False),
    ],
)
def test_host_path_prefixes_match_on_path_boundaries(path: str, prefix: str, inside: bool):
    assert within(path, prefix) is inside


SPEC = """
apiVersion: aiorch.dev/v1
kind: Deployment
metadata: {{name: cache, project: nlp}}
spec:
  image: localhost/aiorch-model:v1
  volumes: [{{hostPath: {path}, mountPath: /models}}]
"""


def test_host_paths_outside_the_projects_policy_are_refused_at_plan_and_apply(
    make_context,
) -> None:
    ctx: HubContext = make_context()
    allow_host_paths(ctx, "nlp", "/data")
    for path in ("/database", "/data-old", "/etc", "/srv/models"):
        text = SPEC.format(path=path)
        for attempt in (deployments.plan, partial(deployments.apply, actor="t")):
            with pytest.raises(Forbidden) as refused:
                attempt(ctx, text)
            assert f"spec.volumes[0] (mountPath /models) hostPath '{path}'" in str(refused.value)
            assert "/data" in str(refused.value)
    assert deployment_views.list_deployments(ctx) == []
    plan = deployments.plan(ctx, SPEC.format(path="/data/models"))
    assert plan["name"] == "cache"


def test_without_a_policy_a_project_mounts_no_host_path(make_context) -> None:
    ctx: HubContext = make_context()
    with pytest.raises(Forbidden, match="may mount no host paths at all"):
        deployments.plan(ctx, SPEC.format(path="/data/models"))


def test_hand_written_desired_state_obeys_the_host_path_policy_too(make_context) -> None:
    ctx: HubContext = make_context()
    token = enrollment.create_token(ctx, "dc1", 3600, 10, "user:t")["token"]
    facts = {"hostname": "box", "cpu": {"logical": 8}}
    agent_id = enrollment.enroll(ctx, token, csr_pem(new_key()), facts, "1")["agent_id"]
    allow_host_paths(ctx, "nlp", "/data")
    volume = {"host_path": "/etc", "mount_path": "/models", "read_only": False}
    document = {"workloads": [a_workload(volumes=[volume])]}
    with pytest.raises(Forbidden, match=r"workload nlp/chat/0 volumes\[0\] hostPath '/etc'"):
        agents.set_desired(ctx, agent_id, document, "user:t")
    assert agents.get_desired(ctx, agent_id)["revision"] == 0
    volume["host_path"] = "/data/models"
    assert agents.set_desired(ctx, agent_id, document, "user:t")["revision"] == 1


# ---- secret-looking inventory vars --------------------------------------------------------------

SECRETS_INVENTORY = """
all:
  vars:
    vault_token: tok-3f9a1c
  children:
    sealed_group:
      vars:
        db: {user: app, password: pw-77e1b0}
      hosts:
        sealed-host:
          ansible_host: 10.9.9.9
          ansible_become_password: become-5d2e
          plain_note: hello
"""
SECRETS = ("tok-3f9a1c", "pw-77e1b0", "become-5d2e")


def test_secret_inventory_vars_are_sealed_at_rest_and_masked_for_all_but_admins(
    shared_hub: HubProcess, admin: httpx.Client, operator: httpx.Client, viewer: httpx.Client
):
    assert _import(admin, SECRETS_INVENTORY).status_code == 200
    for path in Path(shared_hub.data_dir).iterdir():  # the database, its WAL, the log
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in SECRETS if s.encode() in data], path.name
    for client in (operator, viewer):
        host = client.get("/hosts/sealed-host").json()
        assert host["vars"]["ansible_become_password"] == "********"
        assert host["vars"]["plain_note"] == "hello"
        assert client.get("/inventory/export").status_code == 403  # a global admin's
    assert admin.get("/hosts/sealed-host").json()["vars"]["ansible_become_password"] == (
        "become-5d2e"
    )
    exported = admin.get("/inventory/export").text
    assert all(s in exported for s in SECRETS)


def _run_inventory(ctx: HubContext, tmp_path: Path) -> str:
    """The inventory file a run gets; each secret in it is also among the values it masks."""
    path = tmp_path / "run-inventory.yml"
    held = inventory.write_run_inventory(ctx, path)
    text = path.read_text()
    assert [s for s in held if s not in text] == [] and held, "masks what the file holds"
    return text


def test_a_runs_inventory_file_has_the_secrets_and_a_moved_one_fails_closed(
    make_context, tmp_path: Path
):
    ctx: HubContext = make_context()
    inventory.import_inventory(ctx, SECRETS_INVENTORY, "hosts.yml", ADMIN)
    text = _run_inventory(ctx, tmp_path)
    assert all(s in text for s in SECRETS)
    assert "********" not in inventory.export_inventory(ctx, ADMIN)
    assert "become-5d2e" not in inventory.export_inventory(ctx)  # no principal: masked
    inventory.import_inventory(ctx, "all:\n  hosts:\n    other-host: {}\n", "b.yml", ADMIN)

    def move(db) -> None:  # someone with the database copies a sealed value to another host
        (stored,) = db.execute("SELECT vars FROM hosts WHERE name = 'sealed-host'").fetchone()
        db.execute("UPDATE hosts SET vars = ? WHERE name = 'other-host'", [stored])

    ctx.store.write(move)
    with pytest.raises(Unavailable, match="moved from where it was sealed"):
        _run_inventory(ctx, tmp_path)


def test_an_operator_reimport_keeps_sealed_connection_vars_and_seals_new_secrets(
    make_context, tmp_path: Path
):
    ctx: HubContext = make_context()
    inventory.import_inventory(ctx, SECRETS_INVENTORY, "hosts.yml", ADMIN)
    # The sealed become password comes back unchanged, so the operator may re-import it.
    update = SECRETS_INVENTORY.replace("pw-77e1b0", "pw-new").replace("10.9.9.9", "10.9.9.8")
    inventory.import_inventory(ctx, update, "hosts.yml", OPERATOR)
    assert "pw-new" in _run_inventory(ctx, tmp_path)
    assert "pw-new" not in inventory.export_inventory(ctx, OPERATOR)
    moved = update.replace("become-5d2e", "become-new")
    with pytest.raises(Forbidden, match="ansible_become_password"):
        inventory.import_inventory(ctx, moved, "hosts.yml", OPERATOR)


def test_a_run_masks_the_inventorys_secrets_in_what_it_stores(make_context, tmp_path: Path):
    ctx: HubContext = make_context(playbooks_dir=PLAYBOOKS)
    target = tmp_path / "target"  # outside the data dir
    target.mkdir()
    local = f"ansible_connection: local, ansible_python_interpreter: {sys.executable}"
    text = (
        "all:\n  hosts:\n    local-box: {"
        f"{local}, target_dir: {target}, vault_secret: inv-secret-8c1d, "
        "run_label: '{{ vault_secret }}'}\n"
    )
    inventory.import_inventory(ctx, text, "hosts.yml", ADMIN)
    request = runs.RunRequest(playbook="write_file.yml", extravars={"api_token": "x-token"})
    run = runs.start_run(ctx, request, "user:t")
    runs.wait(run["id"], 120)
    assert runs.get_run(ctx, run["id"])["status"] == "successful"
    assert "inv-secret-8c1d" in (target / "aiorch-test-marker").read_text(), "it was used"
    stored = json.dumps(run_history.run_events(ctx, run["id"], 0, 1000))
    assert "written by run ********" in stored
    for path in ctx.settings.data_dir.iterdir():
        if path.is_file():
            assert b"inv-secret-8c1d" not in path.read_bytes(), path.name
