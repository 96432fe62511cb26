"""Every run the hub starts names the hub's CA bundle (DATA_DIR/ca.pem) to its playbook as
`aiorch_hub_ca_file`, which the roles install on hosts for apt, pip and the agent role; a
run's own extra vars cannot point it at another file on the hub's machine."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from aiorch.endpoint import CA_FILE
from aiorch.hub.context import HubContext
from aiorch.hub.services import inventory, runs

PLAYBOOKS = Path(__file__).parent / "playbooks"


def test_a_run_gets_the_hub_ca_and_cannot_name_another_file(
    make_context: Callable[..., HubContext], tmp_path: Path
) -> None:
    ctx = make_context(playbooks_dir=PLAYBOOKS)
    (ctx.settings.data_dir / CA_FILE).write_text("the hub's CA\n")
    elsewhere = tmp_path / "not-the-ca.key"
    elsewhere.write_text("a file of the hub's machine\n")
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {"all": {"hosts": {"h1": {**local, "target_dir": str(host_dir)}}}}
    inventory.import_inventory(ctx, yaml.safe_dump(hosts), "local.yml", "user:test")
    request = runs.RunRequest("hub_ca.yml", extravars={"aiorch_hub_ca_file": str(elsewhere)})
    started = runs.start_run(ctx, request, "user:test")
    runs.wait(started["id"], 120)
    run = runs.get_run(ctx, started["id"])
    assert run["status"] == "successful", run["message"]
    assert (host_dir / "hub-ca.pem").read_text() == "the hub's CA\n"
