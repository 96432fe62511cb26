"""A third-party role that needs community.general runs through `aiorch provision`, offline,
from an operator's playbook set, and changes nothing the second time.

The role is written here in the style of geerlingguy.ntp: it sets the timezone with
`community.general.timezone` and installs and configures chrony from the site repository.
community.general is not installed on this machine and no Galaxy server is reachable, but the
`ansible` package on PyPI ships it: its wheel is downloaded once (cached under .data/) and the
collection taken out of it, as an operator would carry it across an air gap.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures_provision import PROJECT, ProvisionLab, site_inventory

pytestmark = pytest.mark.lab

ANSIBLE = "ansible>=12,<13"  # the community package built on ansible-core 2.19
CACHE = PROJECT / ".data"
GENERAL = "ansible_collections/community/general/"
HOST = "edge1-1"
# UTC+0 all year, yet not the hosts' Etc/UTC: community.general.timezone in a privileged lab
# host can step the machine's shared clock by the zone's offset (Europe/Berlin moved it an hour
# back in a CI run, and every certificate the hubs had issued was "not yet valid").
TIMEZONE = "Africa/Abidjan"

ROLE = {
    "defaults/main.yml": {
        "ntp_timezone": "Etc/UTC",
        "ntp_package": "chrony",
        "ntp_servers": ["ntp.lab.invalid"],
    },
    "handlers/main.yml": [
        {
            "name": "Restart chrony",
            "ansible.builtin.service": {"name": "chrony", "state": "restarted"},
        }
    ],
    "tasks/main.yml": [
        {
            "name": "Set the timezone",
            "community.general.timezone": {"name": "{{ ntp_timezone }}"},
        },
        {
            "name": "Never set the clock (a container may not)",
            "ansible.builtin.copy": {
                "dest": "/etc/default/chrony",
                "content": 'DAEMON_OPTS="-F 1 -x"\n',
                "mode": "0644",
            },
            "notify": "Restart chrony",
        },
        {
            "name": "Create chrony's folder (the config goes in before the package)",
            "ansible.builtin.file": {"path": "/etc/chrony", "state": "directory", "mode": "0755"},
        },
        {
            "name": "Configure chrony",
            "ansible.builtin.template": {
                "src": "chrony.conf.j2",
                "dest": "/etc/chrony/chrony.conf",
                "mode": "0644",
            },
            "notify": "Restart chrony",
        },
        {
            "name": "Install the NTP daemon",
            "ansible.builtin.apt": {"name": "{{ ntp_package }}", "state": "present"},
        },
        {
            "name": "Run chrony",
            "ansible.builtin.service": {"name": "chrony", "state": "started", "enabled": True},
        },
    ],
}
CHRONY_CONF = "{% for server in ntp_servers %}server {{ server }} iburst\n{% endfor %}" + (
    "driftfile /var/lib/chrony/chrony.drift\nmakestep 1.0 3\n"
)


def community_general() -> Path:
    """A folder holding ansible_collections/community/general, out of the `ansible` wheel."""
    wheels = CACHE / "ansible-wheel"
    found = sorted(wheels.glob("ansible-*.whl"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", ANSIBLE, "--no-deps", "-d", str(wheels)],
            check=True,
            capture_output=True,
        )
        found = sorted(wheels.glob("ansible-*.whl"))
    wheel = found[-1]
    out = CACHE / f"community-general-{wheel.name.split('-')[1]}"
    if not (out / GENERAL / "MANIFEST.json").is_file():
        partial = out.parent / f"{out.name}.partial"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(partial, [n for n in archive.namelist() if n.startswith(GENERAL)])
        partial.rename(out)
    return out


def ntp_set(where: Path) -> Path:
    """The operator's set: ntp.yml and the third-party-style role `ntp`."""
    root = where / "ops"
    for rel, content in ROLE.items():
        path = root / "roles" / "ntp" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(content, sort_keys=False))
    (root / "roles" / "ntp" / "templates").mkdir()
    (root / "roles" / "ntp" / "templates" / "chrony.conf.j2").write_text(CHRONY_CONF)
    play = [{"name": "NTP", "hosts": "all", "become": True, "roles": ["ntp"]}]
    (root / "ntp.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    return root


def _provision(lab: ProvisionLab, *argv: str) -> dict[str, Any]:
    result = lab.hub.cli("provision", *argv, "--limit", HOST, "--output", "json",
                         check=False, timeout=900)  # fmt: skip
    assert result.stdout.strip(), result.stderr
    run: dict[str, Any] = json.loads(result.stdout)
    logs = lab.hub.cli("runs", "logs", run["id"]).stdout
    assert run["status"] == "successful", f"{run['message']}\n{logs[-6000:]}"
    return run


def test_a_community_general_role_runs_offline_from_an_operator_set_and_is_idempotent(
    provision_lab: ProvisionLab, tmp_path: Path
) -> None:
    assert "default" not in provision_lab.lab.routes(HOST)  # no way out of the lab
    hub = provision_lab.hub
    hub.cli(
        "inventory", "import", str(site_inventory(provision_lab, tmp_path / "site.yml", [HOST]))
    )
    _provision(provision_lab, "site_repo.yml")  # apt on the host: the site repository only
    collections = community_general()
    made = hub.cli("playbooks", "import", "ops", str(ntp_set(tmp_path)),
                   "--collection", str(collections))  # fmt: skip
    digest = made.stdout.split()[-1]
    extra = ["-e", f"ntp_timezone={TIMEZONE}"]
    first = _provision(provision_lab, "--set", "ops", "ntp.yml", *extra)
    assert (first["playbook_set"], first["playbook_set_digest"]) == ("ops", digest)
    assert first["recap"][HOST]["changed"] > 0
    host = provision_lab.testinfra(HOST)
    assert host.package("chrony").is_installed
    assert host.service("chrony").is_running
    assert host.file("/etc/localtime").linked_to.endswith(TIMEZONE)
    second = _provision(provision_lab, "--set", "ops", "ntp.yml", *extra)
    assert second["recap"][HOST]["changed"] == 0, second["recap"]
    assert second["playbook_set_digest"] == digest
