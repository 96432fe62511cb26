"""Provisioning with Ansible from the hub, fully offline: site.yml against real lab hosts.

Real ansible-playbook over real SSH into a fresh 3-host lab whose only package source is
the site repository served from the lab's gateway; outcomes are read back with testinfra.
The tests run in file order on one lab (converge, idempotence, checks, then the ones that
restart, change or drain a host), and each repairs what it changes.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aiorch.endpoint import CA_FILE
from aiorch.hub.context import HubContext
from aiorch.hub.services import drift, inventory, run_history, runs
from aiorch.hub.services.auth import Principal
from aiorch.lab import wait_until
from aiorch.lab.podman import podman
from tests.fixtures_hub import HubProcess
from tests.fixtures_provision import (
    PLAYBOOKS,
    SITE_RELEASE,
    ProvisionLab,
    assert_ok,
    site_inventory,
    tiny_image_archive,
)

pytestmark = pytest.mark.lab

HOSTS = ("dc1-1", "edge1-1", "edge2-1")
HOST_CA = "/etc/aiorch/hub-ca.pem"  # where the roles install the hub's CA


@pytest.fixture(scope="module")
def converged(provision_lab: ProvisionLab) -> ProvisionLab:
    """site.yml once on every host: the state the other tests read."""
    for host in HOSTS:  # air-gapped: no route anywhere but the lab subnet
        assert "default" not in provision_lab.lab.routes(host)
    result = provision_lab.run("site.yml")
    assert_ok(result)
    assert set(result.recap) == set(HOSTS)
    return provision_lab


def test_second_run_changes_nothing(converged: ProvisionLab) -> None:
    result = converged.run("site.yml")
    assert_ok(result)
    changed = {host: r["changed"] for host, r in result.recap.items() if r["changed"]}
    assert changed == {}, result.output[-6000:]


def _outcome(ctx: HubContext, run: dict[str, Any]) -> str:
    """A run's message and its changed or failed results, for assertion messages."""
    events = run_history.run_events(ctx, run["id"])
    lines = [f"{e['host']} {e['status']}: {e['task']}: {e['res'].get('msg', '')}" for e in events]
    return "\n".join([str(run["message"]), *lines])


def _drift_check(ctx: HubContext) -> dict[str, Any]:
    """The hub's drift job, run now; the one site's check run once it ended."""
    (run_id,) = drift.check_drift(ctx).values()
    return runs.get_run(ctx, run_id)


@pytest.mark.e2e
def test_check_mode_on_a_converged_host_changes_and_fails_nothing(
    converged: ProvisionLab, tmp_path: Path
) -> None:
    """`aiorch provision site.yml --check --output json` on the GPU server: recap per host.

    This hub is not the one the lab's hosts trust: its own CA would be drift, so its (global
    admin's) inventory names the site hub's CA for the roles; run extra vars may not."""
    hub = HubProcess(tmp_path / "hub").start()
    site_ca = str(converged.hub.ca_path)
    cas = {
        "aiorch_site_repo_ca_file": site_ca,
        "aiorch_edge_agent_ca_file": site_ca,
        "aiorch_site_repo_keyring_file": str(converged.hub.keyring_path),
    }
    try:
        inventory_file = site_inventory(converged, tmp_path / "site.yml", ["dc1-1"], **cas)
        hub.cli("inventory", "import", str(inventory_file))
        argv = ["provision", "site.yml", "--check", "--limit", "site=dc1", "--output", "json"]
        refused = hub.cli(*argv, "-e", f"aiorch_site_repo_ca_file={site_ca}", check=False)
        assert refused.returncode != 0 and "aiorch_site_repo_ca_file" in refused.stderr
        result = hub.cli(*argv, check=False, timeout=900)
        run = json.loads(result.stdout)
        logs = hub.cli("runs", "logs", run["id"]).stdout
    finally:
        hub.stop()
    assert result.returncode == 0, logs[-6000:]
    assert run["check"] is True and run["status"] == "successful"
    recap = run["recap"]["dc1-1"]
    assert recap["ok"] > 0, recap
    changed = [line for line in logs.splitlines() if " changed " in line]
    assert (recap["changed"], recap["failed"], recap["unreachable"]) == (0, 0, 0), changed


def test_drift_job_finds_a_changed_chrony_config_and_a_site_run_heals_it(
    converged: ProvisionLab, make_context: Callable[..., HubContext], tmp_path: Path
) -> None:
    name, conf = "edge1-1", "/etc/chrony/chrony.conf"
    ctx = make_context(playbooks_dir=PLAYBOOKS)  # the drift job's default: site.yml
    # This context stands for the site's hub: its data dir holds that hub's CA, which its runs
    # pass to the roles (runs.py adds aiorch_hub_ca_file).
    shutil.copy(converged.hub.ca_path, ctx.settings.data_dir / CA_FILE)
    keyring = {"aiorch_site_repo_keyring_file": str(converged.hub.keyring_path)}
    text = site_inventory(converged, tmp_path / "site.yml", [name], **keyring).read_text()
    inventory.import_inventory(ctx, text, "site.yml", Principal("user", "test", "admin"))
    clean = _drift_check(ctx)
    assert clean["status"] == "successful" and drift.findings(ctx) == [], _outcome(ctx, clean)
    assert run_history.run_events(ctx, clean["id"]) == []  # no ok results stored

    converged.lab.exec(name, ["sh", "-c", f"echo 'server 192.0.2.99 iburst' >> {conf}"])
    tampered = _drift_check(ctx)
    (finding,) = drift.findings(ctx)
    assert (finding["host"], finding["state"]) == (name, "drifted"), _outcome(ctx, tampered)
    assert "Configure chrony for the site's time servers" in finding["changed_tasks"]
    host = converged.testinfra(name)
    assert "192.0.2.99" in host.file(conf).content_string  # check mode changed nothing

    heal = runs.start_run(ctx, runs.RunRequest("site.yml", limit=name), "user:test")
    runs.wait(heal["id"], 900)
    healed = runs.get_run(ctx, heal["id"])
    assert healed["status"] == "successful", _outcome(ctx, healed)
    assert "192.0.2.99" not in host.file(conf).content_string
    again = _drift_check(ctx)
    assert drift.findings(ctx) == [], _outcome(ctx, again)


def test_packages_come_from_the_site_repository_only(converged: ProvisionLab) -> None:
    for name in HOSTS:
        host = converged.testinfra(name)
        for package in ("chrony", "podman", "crun", "python3-pyroute2", "python3-venv"):
            assert host.package(package).is_installed, f"{package} on {name}"
        assert not host.file("/etc/apt/sources.list").exists
        assert host.file("/etc/apt/sources.disabled-by-aiorch/sources.list").exists
        targets = host.check_output("apt-get indextargets --format '$(URI)'").split()
        assert targets and all(t.startswith(f"{converged.repo_url}/debs/") for t in targets)
        pip_conf = host.file("/etc/pip.conf").content_string
        assert "no-index = true" in pip_conf
        assert f"{converged.repo_url}/wheels/index.html" in pip_conf
        assert f"cert = {HOST_CA}" in pip_conf and "trusted-host" not in pip_conf
        # Signed: apt verifies InRelease with the site keyring, and trusts nothing blindly.
        sources = host.file("/etc/apt/sources.list.d/aiorch.sources").content_string
        assert "Signed-By: /etc/apt/keyrings/aiorch-site.gpg" in sources
        assert "Trusted" not in sources
        keyring = host.file("/etc/apt/keyrings/aiorch-site.gpg")
        assert keyring.content == converged.hub.keyring_path.read_bytes()
        assert (
            host.run("ls /var/lib/apt/lists | grep -c '_debs_._InRelease$'").stdout.strip() == "1"
        )
        release = host.file("/etc/aiorch/site-release.json")
        assert json.loads(release.content_string) == SITE_RELEASE and release.mode == 0o644


def _foreign_ca_pem() -> str:
    """A CA that is not the hub's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the hub's CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


PLAIN_PROBE = """import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=5)
except Exception as exc:
    print(type(exc).__name__)
else:
    print("answered")
"""


def test_apt_and_pip_fetch_over_https_verified_by_the_hub_ca(converged: ProvisionLab) -> None:
    """The repository URL is https://, the host holds the hub's CA, and apt and pip verify the
    hub with it: with another CA both refuse the hub, and plain HTTP gets no answer."""
    assert converged.repo_url.startswith("https://")
    gateway, name = converged.lab.gateway, "edge1-1"
    host = converged.testinfra(name)
    assert host.file(HOST_CA).content_string == converged.hub.ca_path.read_text()
    apt_conf = host.file("/etc/apt/apt.conf.d/90aiorch").content_string
    assert f'Acquire::https::{gateway}::CAInfo "{HOST_CA}";' in apt_conf
    pip = "/opt/aiorch-agent/bin/pip download --no-deps --retries 0 --timeout 10"
    apt_update = "apt-get update -qq --error-on=any"  # else an index not fetched is a warning
    assert host.run(apt_update).rc == 0
    assert host.run(f"{pip} --dest /tmp/aiorch-wheels aiorch").rc == 0
    converged.lab.exec(
        name, ["sh", "-c", "cat > /tmp/other-ca.pem"], input=_foreign_ca_pem().encode()
    )
    refused = host.run(f"{apt_update} -o Acquire::https::{gateway}::CAInfo=/tmp/other-ca.pem")
    assert refused.rc != 0 and "certificate" in (refused.stdout + refused.stderr).lower()
    refused = host.run(f"{pip} --cert /tmp/other-ca.pem --dest /tmp/aiorch-wheels-2 aiorch")
    assert refused.rc != 0 and "certificate" in (refused.stdout + refused.stderr).lower()
    plain = converged.repo_url.replace("https://", "http://", 1) + "/debs/Packages"
    assert host.run("python3 -c %s %s", PLAIN_PROBE, plain).stdout.strip() != "answered"


def test_base_time_sysctl_and_facts(converged: ProvisionLab) -> None:
    host = converged.testinfra("edge1-1")
    assert host.check_output("hostname") == "edge1-1"
    assert host.service("chrony").is_running
    chrony = host.file("/etc/chrony/chrony.conf").content_string
    assert f"server {converged.lab.gateway} iburst" in chrony and "pool " not in chrony
    # A container: chronyd only measures (-x), and only per-namespace sysctls are set.
    assert "-x" in host.file("/etc/default/chrony").content_string
    assert host.sysctl("net.core.somaxconn") == 8192
    sysctl_conf = host.file("/etc/sysctl.d/90-aiorch.conf").content_string
    assert "# skipped vm.max_map_count" in sysctl_conf and "container" in sysctl_conf
    facts = json.loads(host.file("/etc/ansible/facts.d/aiorch.fact").content_string)
    assert facts["site"] == "edge1" and facts["container"] == "podman"


def test_sshd_hardened_and_password_login_refused(converged: ProvisionLab) -> None:
    host = converged.testinfra("edge2-1")
    effective = host.check_output("sshd -T -C user=root,host=x,addr=127.0.0.1")
    for line in ("passwordauthentication no", "kbdinteractiveauthentication no"):
        assert line in effective
    assert "permitrootlogin without-password" in effective  # sshd -T's name for prohibit-password
    attempt = subprocess.run(
        [
            "ssh",
            "-F",
            str(converged.ssh_config),
            "-o",
            "BatchMode=yes",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            converged.lab.host("edge2-1").address,
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert attempt.returncode == 255
    assert "Permission denied (publickey)" in attempt.stderr


def _link(host: object, name: str) -> dict[str, object]:
    return dict(json.loads(host.check_output(f"ip -json -details address show {name}"))[0])  # type: ignore[attr-defined]


def test_network_files_and_live_link(converged: ProvisionLab) -> None:
    for index, name in enumerate(HOSTS, start=1):
        host = converged.testinfra(name)
        assert host.file("/etc/systemd/network/50-aiorch-aiorch0.netdev").contains("Kind=bridge")
        assert host.file("/etc/systemd/network/50-aiorch-aiorch0.network").contains("MTUBytes=9000")
        link = _link(host, "aiorch0")
        assert link["mtu"] == 9000
        addresses = {f"{a['local']}/{a['prefixlen']}" for a in link["addr_info"]}  # type: ignore[attr-defined]
        assert f"192.0.2.{10 + index}/24" in addresses
        # The management link stays unmanaged: networkd never touches it.
        assert "unmanaged" in host.check_output("networkctl list eth0 --no-legend")


def test_podman_runs_a_container_from_an_archive(converged: ProvisionLab) -> None:
    archive = tiny_image_archive(converged.workdir / "tiny.tar")
    host_name = "edge1-1"
    podman("cp", str(archive), f"{converged.lab.host(host_name).container}:/root/tiny.tar")
    host = converged.testinfra(host_name)
    loaded = host.check_output("podman load --quiet --input /root/tiny.tar")
    ref = loaded.split(":", 1)[1].strip()
    # dash is PID 1 of its own PID namespace: it really runs in a container.
    assert host.check_output(f"podman run --rm {ref} /usr/bin/dash -c 'echo $$'") == "1"
    # Offline policy: nothing but archives and local storage, no short names.
    refused = host.run("podman pull --policy=always busybox")
    assert refused.rc != 0


def test_agents_checked_in(converged: ProvisionLab) -> None:
    agents = converged.hub.admin.get("/agents").json()
    online = {
        a["host_name"] for a in agents if a["status"] == "online" and a["uptime_s"] is not None
    }
    assert online == set(HOSTS)
    for name in HOSTS:
        assert converged.testinfra(name).service("aiorch-agent").is_running


def test_the_role_enrolls_a_revoked_agent_again_and_leaves_a_working_one(
    converged: ProvisionLab,
) -> None:
    """The edge_agent role skips enrollment while the host's certificate gets through (the
    second-run test: nothing changed); once the hub revoked it, the role enrolls anew."""
    name = "edge2-1"
    host = converged.testinfra(name)
    state = "/var/lib/aiorch-agent/credential.json"
    old = json.loads(host.file(state).content_string)["agent_id"]
    revoked = converged.hub.admin.post(f"/agents/{old}/revoke")
    assert revoked.status_code == 200, revoked.text
    result = converged.run("edge_agent.yml", limit=name)
    assert_ok(result)
    assert result.recap[name]["changed"] > 0
    new = json.loads(host.file(state).content_string)["agent_id"]
    assert new != old
    shown = converged.hub.admin.get(f"/agents/{new}").json()
    assert (shown["host_name"], shown["status"]) == (name, "online")


def test_mounts_and_links_survive_a_restart(converged: ProvisionLab) -> None:
    name = "dc1-1"
    converged.lab.faults.restart(name)
    host = converged.testinfra(name)
    data = host.mount_point("/srv/data")
    assert data.exists and data.filesystem == "ext4"
    assert host.mount_point("/srv/models").exists
    cache = host.file("/srv/models/cache")
    assert cache.is_directory and cache.mode == 0o750
    wait_until(
        lambda: _link(host, "aiorch0")["mtu"] == 9000 and _link(host, "aiorch0")["addr_info"],
        timeout=30,
        what="aiorch0 configured by networkd after boot",
    )
    wait_until(lambda: host.service("aiorch-agent").is_running, timeout=30, what="agent after boot")


def test_storage_refuses_to_format_a_device_holding_data(converged: ProvisionLab) -> None:
    name = "edge2-1"
    other = {"device": "/var/lib/aiorch-other.img", "fstype": "ext4"}
    filesystems = converged.site_vars[name]["aiorch_storage_filesystems"] + [other]
    result = converged.run(
        "storage.yml", limit=name, extra={"aiorch_storage_filesystems": filesystems}
    )
    assert result.rc != 0 and result.recap[name]["failed"] == 1
    assert "refusing to format /var/lib/aiorch-other.img" in result.output
    assert "it already holds swap" in result.output
    host = converged.testinfra(name)
    assert (
        host.check_output("blkid --probe --output value --match-tag TYPE /var/lib/aiorch-other.img")
        == "swap"
    )


def test_network_change_keeps_the_ssh_session(converged: ProvisionLab) -> None:
    name = "edge1-1"
    lab = converged.lab
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab.known_hosts_path))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(lab.host(name).address, username="root", key_filename=str(lab.ssh_key_path))
    try:
        changed = [
            {
                **converged.site_vars[name]["aiorch_network_interfaces"][0],
                "mtu": 8000,
                "addresses": ["192.0.2.12/24", "198.51.100.12/24"],
            }
        ]
        result = converged.run(
            "network.yml", limit=name, extra={"aiorch_network_interfaces": changed}
        )
        assert_ok(result)
        assert result.recap[name]["changed"] > 0
        _, stdout, _ = client.exec_command("ip -json address show aiorch0")  # the same session
        link = json.loads(stdout.read())[0]
        assert link["mtu"] == 8000
        assert {a["local"] for a in link["addr_info"]} == {"192.0.2.12", "198.51.100.12"}
        assert client.get_transport().is_active()
    finally:
        client.close()
        assert_ok(converged.run("network.yml", limit=name))  # back to the site's config


def test_nvidia_gate_fails_clearly_on_a_forced_gpu(converged: ProvisionLab) -> None:
    """No GPU in a lab: pretend one, with a stand-in package, to run install, hold and the gate."""
    name = "dc1-1"
    forced = {
        "aiorch_nvidia_driver_assume_gpus": 1,
        "aiorch_nvidia_driver_packages": ["python3-pip"],  # in the repo, installed by nobody else
        "aiorch_nvidia_driver_extra_packages": [],
        "aiorch_nvidia_driver_persistenced": False,
        "aiorch_nvidia_driver_reboot": False,
    }
    first = converged.run("nvidia_driver.yml", limit=name, extra=forced)
    assert_ok(first)
    assert "reboot deferred" in first.output
    checked = converged.run("nvidia_driver.yml", limit=name, extra=forced, check=True)
    assert_ok(checked)  # the driver path in check mode: nothing to change, nothing failing
    assert checked.recap[name]["changed"] == 0, checked.output[-6000:]
    host = converged.testinfra(name)
    assert host.check_output("dpkg-query --showformat '${Status}' --show python3-pip").startswith(
        "hold "
    )
    assert host.file("/etc/modprobe.d/aiorch-blacklist-nouveau.conf").contains("blacklist nouveau")
    converged.lab.faults.restart(name)  # the deferred reboot: /run empties, the mark goes
    second = converged.run("nvidia_driver.yml", limit=name, extra=forced)
    assert second.rc != 0
    assert f"GPU readiness gate failed on {name}: NVML could not start" in second.output


def test_decommission_drains_and_wipes_only_when_confirmed(converged: ProvisionLab) -> None:
    name = "edge2-1"
    wipe = {
        "aiorch_decommission_devices": ["/var/lib/aiorch-disk0.img"],
        "aiorch_decommission_wipe_devices": True,
    }
    unconfirmed = converged.run("decommission.yml", limit=name, extra=wipe)
    assert unconfirmed.rc != 0 and "yes-wipe-data" in unconfirmed.output
    host = converged.testinfra(name)
    assert host.mount_point("/srv/data").exists  # nothing happened
    drained = converged.run(
        "decommission.yml",
        limit=name,
        extra={**wipe, "aiorch_decommission_confirm": "yes-wipe-data"},
    )
    assert_ok(drained)
    assert not host.mount_point("/srv/data").exists and not host.mount_point("/srv/models").exists
    assert "aiorch_storage" not in host.file("/etc/fstab").content_string
    assert (
        not host.file("/opt/aiorch-agent").exists and not host.file("/var/lib/aiorch-agent").exists
    )
    # The agent's config goes; the hub's CA stays, for apt and pip.
    assert not host.file("/etc/aiorch/agent.yaml").exists and host.file(HOST_CA).exists
    assert host.run("blkid --probe /var/lib/aiorch-disk0.img").rc == 2
