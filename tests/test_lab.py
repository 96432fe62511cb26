"""The lab fleet on real podman: hosts boot, Ansible gets in, faults bite, down cleans up."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from aiorch.errors import UserError
from aiorch.lab import Lab, LabHost, firewall, wait_until
from aiorch.lab.fleet import ssh_banner
from aiorch.lab.podman import podman
from tests.fixtures_lab import INVENTORIES, unique_lab_name

pytestmark = pytest.mark.lab

BIN = Path(sys.executable).parent
# Runs inside a host: connect to HOST:PORT, print "ok" or the error (by errno, not by name).
CONNECT = """
import socket, sys
try:
    family, kind = socket.AF_INET, socket.SOCK_STREAM
    addr = socket.getaddrinfo(sys.argv[1], int(sys.argv[2]), family, kind)[0][4]
    socket.create_connection(addr, timeout=float(sys.argv[3])).close()
    print("ok")
except OSError as exc:
    print(f"{type(exc).__name__} errno={exc.errno} {exc}")
"""


def connect_from(lab: Lab, host: str, address: str, port: int, timeout: float = 2) -> str:
    argv = ["python3", "-c", CONNECT, address, str(port), str(timeout)]
    return lab.exec(host, argv).stdout.strip()


def ssh(lab: Lab, host: LabHost, known_hosts: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Plain OpenSSH from this machine, host-key checking on, as Ansible does it."""
    return subprocess.run(
        [
            "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=5", "-i", str(lab.ssh_key_path),
            f"root@{host.address}", *argv,
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def lab_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "aiorch"), "lab", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def gateway_server(lab: Lab) -> Iterator[int]:
    """A TCP server on the lab's gateway address (where the hub listens); yields its port."""
    server = socket.create_server((lab.gateway, 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_ansible_ping_reaches_every_host_with_host_key_checking(lab: Lab) -> None:
    env = os.environ | {"ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [str(BIN / "ansible"), "all", "-i", str(lab.inventory_path), "-m", "ping"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(line.split()[0] for line in proc.stdout.splitlines() if "| SUCCESS" in line) == [
        "dc1-1", "edge1-1", "edge2-1",
    ]  # fmt: skip


def test_ssh_refuses_a_host_whose_key_is_not_known(lab: Lab, tmp_path: Path) -> None:
    host = lab.hosts[0]
    assert ssh(lab, host, lab.known_hosts_path, "true").returncode == 0
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    refused = ssh(lab, host, empty, "true")
    assert refused.returncode != 0
    assert "Host key verification failed" in refused.stderr


def test_hosts_boot_systemd_with_their_own_identity(lab: Lab) -> None:
    hosts = lab.hosts
    for host in hosts:
        state = lab.exec(host.name, ["systemctl", "is-system-running"], check=False).stdout.strip()
        failed = lab.exec(host.name, ["systemctl", "--failed", "--plain", "--no-legend"]).stdout
        assert (state, failed) == ("running", ""), host.name
    hostnames = [lab.exec(h.name, ["hostname"]).stdout.strip() for h in hosts]
    machine_ids = {lab.exec(h.name, ["cat", "/etc/machine-id"]).stdout.strip() for h in hosts}
    host_keys = set(lab.known_hosts_path.read_text().splitlines())
    assert hostnames == [h.name for h in hosts]
    assert len(machine_ids) == len(hosts) and all(len(m) == 32 for m in machine_ids)
    assert len(host_keys) == len(hosts)


def test_inventory_places_hosts_on_sites_and_roles(lab: Lab) -> None:
    groups = yaml.safe_load(lab.inventory_path.read_text())["all"]["children"]
    assert {g: sorted(v["hosts"]) for g, v in groups.items()} == {
        "dc1": ["dc1-1"],
        "gpu_server": ["dc1-1"],
        "edge1": ["edge1-1"],
        "edge2": ["edge2-1"],
        "edge_box": ["edge1-1", "edge2-1"],
    }
    edge2 = groups["edge2"]["hosts"]["edge2-1"]
    assert edge2["ansible_host"] == lab.host("edge2-1").address
    assert "StrictHostKeyChecking=yes" in edge2["ansible_ssh_common_args"]
    assert edge2["aiorch_labels"] == {
        "lab": lab.name, "site": "edge2", "role": "edge-box", "region": "us",
    }  # fmt: skip


def test_hosts_reach_no_package_registry(lab: Lab) -> None:
    host = "edge1-1"
    assert "default" not in lab.routes(host)
    apt = lab.exec(host, ["apt-get", "-o", "Acquire::Retries=0", "update"], check=False, timeout=60)
    assert apt.returncode != 0
    assert "Network is unreachable" in apt.stdout + apt.stderr
    for registry, port in (("deb.debian.org", 80), ("pypi.org", 443)):
        # A name may resolve (the lab DNS forwards); connecting must fail.
        assert connect_from(lab, host, registry, port).startswith(
            ("OSError errno=101", "gaierror")
        ), registry


def test_cut_host_cannot_reach_the_hub_until_healed(lab: Lab, gateway_server: int) -> None:
    host = lab.host("edge1-1")
    assert connect_from(lab, host.name, lab.gateway, gateway_server) == "ok"
    lab.faults.cut(host.name)
    try:
        assert lab.status()["hosts"][host.index - 1]["cut"] is True
        assert connect_from(lab, host.name, lab.gateway, gateway_server).startswith("TimeoutError")
        assert ssh_banner(host.address), "SSH from this machine must survive a cut"
        assert connect_from(lab, "edge2-1", lab.gateway, gateway_server) == "ok"
    finally:
        lab.faults.heal(host.name)
    assert firewall.cut_addresses(lab.table) == set()
    wait_until(
        lambda: connect_from(lab, host.name, lab.gateway, gateway_server) == "ok",
        timeout=10,
        what="healed host to reach the gateway",
    )


def test_restart_is_a_real_reboot_and_sshd_comes_back(lab: Lab) -> None:
    host = lab.host("edge2-1")
    lab.exec(host.name, ["touch", "/run/aiorch-before-reboot"])
    lab.faults.restart(host.name)
    assert lab.exec(host.name, ["test", "-e", "/run/aiorch-before-reboot"], check=False).returncode
    proc = ssh(lab, host, lab.known_hosts_path, "systemctl", "is-active", "ssh")
    assert proc.stdout.strip() == "active", proc.stderr
    assert lab.host(host.name).address == host.address


def test_pause_freezes_a_host_and_resume_thaws_it(lab: Lab) -> None:
    host = lab.host("dc1-1")
    lab.faults.pause(host.name)
    try:
        assert lab.host(host.name).state == "paused"
        assert not ssh_banner(host.address)
    finally:
        lab.faults.resume(host.name)
    wait_until(lambda: ssh_banner(host.address), timeout=10, what="sshd after resume")


def test_kill_sends_sigkill_and_systemd_restarts_sshd(lab: Lab) -> None:
    host = lab.host("edge1-1")

    def sshd_pid() -> int:
        out = lab.exec(host.name, ["systemctl", "show", "--property=MainPID", "--value", "ssh"])
        return int(out.stdout)

    before = sshd_pid()
    lab.faults.kill(host.name, "sshd")
    wait_until(lambda: sshd_pid() not in (0, before), timeout=30, what="sshd to be restarted")
    wait_until(lambda: ssh_banner(host.address), timeout=10, what="sshd to answer")
    with pytest.raises(UserError, match="no process named"):
        lab.faults.kill(host.name, "no-such-process")


def test_cli_status_json_exposes_the_hub_address(lab: Lab) -> None:
    proc = lab_cli("status", "--name", lab.name, "--output", "json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["hub_address"] == lab.gateway
    assert info["inventory"] == str(lab.inventory_path)
    assert [h["name"] for h in info["hosts"]] == ["dc1-1", "edge1-1", "edge2-1"]
    bad = lab_cli("fault", "cut", "no-such-host", "--name", lab.name)
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"aiorch: error: lab {lab.name} has no host 'no-such-host'"


def test_up_is_idempotent_labs_coexist_and_down_removes_everything(
    lab: Lab, gateway_server: int
) -> None:
    name = unique_lab_name("d")
    small = Lab(name)
    try:
        check_second_lab(lab, small, gateway_server)
    finally:
        small.down()  # idempotent: a no-op when the checks got through


def check_second_lab(lab: Lab, small: Lab, gateway_server: int) -> None:
    name = small.name
    first = lab_cli("up", "--hosts", "1", "--name", name, "--inventory-dir", str(INVENTORIES))
    assert first.returncode == 0, first.stderr
    inventory = Path(first.stdout.strip())
    assert inventory == small.inventory_path == INVENTORIES / f"lab-{name}" / "hosts.yml"
    small.up(hosts=1)
    assert [h.name for h in small.hosts] == ["dc1-1"]
    small.up(hosts=2)
    assert [h.name for h in small.hosts] == ["dc1-1", "edge1-1"]
    # Two labs side by side: own networks, own addresses, both fully up.
    assert small.subnet != lab.subnet and small.gateway != lab.gateway
    assert all(h.state == "running" for h in lab.hosts + small.hosts)
    # Nothing beyond a lab's own gateway, even for a host that adds a route to go further.
    small.exec("dc1-1", ["ip", "route", "add", lab.subnet, "via", small.gateway])
    assert connect_from(small, "dc1-1", lab.gateway, gateway_server).startswith("TimeoutError")
    assert connect_from(small, "dc1-1", lab.hosts[0].address, 22).startswith("TimeoutError")

    assert small.down() is True
    leftovers = podman("ps", "--all", "--quiet", "--filter", f"label=aiorch.lab={name}")
    assert leftovers.stdout.strip() == ""
    assert podman("network", "exists", f"aiorch-{name}", check=False).returncode != 0
    assert not firewall.exists(small.table)
    assert not small.dir.exists() and not inventory.exists() and not inventory.parent.exists()
    assert small.down() is False
    again = lab_cli("down", "--name", name)
    assert (again.returncode, again.stdout.strip()) == (0, f"lab {name}: nothing to remove")
    assert all(h.state == "running" for h in lab.hosts), "the other lab must be untouched"
