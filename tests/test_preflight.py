"""Pre-flight without the lab: SSH settings resolved as Ansible's ssh would, one-line failures.

`-F none` keeps this machine's own ssh_config out of every case that does not bring one.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from aiorch.hub.services import preflight, ssh_settings

NO_CONFIG = "-F none"


def settings(hostvars: dict[str, object], name: str = "edge1-1") -> ssh_settings.Endpoint:
    return ssh_settings.for_host(name, hostvars, timeout=5)


@pytest.fixture
def ssh_config(tmp_path: Path) -> Path:
    """An ssh_config with a bastion alias and defaults for every host."""
    path = tmp_path / "ssh_config"
    path.write_text(
        "Host bastion\n"
        "  HostName 192.0.2.10\n"
        "  Port 2200\n"
        "  User jumper\n"
        "  IdentityFile /keys/bastion\n"
        "Host *\n"
        "  User ops\n"
        "  IdentityFile /keys/fleet\n"
        "  UserKnownHostsFile /etc/fleet/known_hosts\n"
        "  StrictHostKeyChecking yes\n"
    )
    return path


def test_settings_follow_the_inventory_vars():
    found = settings(
        {
            "ansible_host": "10.0.0.5",
            "ansible_port": 2222,
            "ansible_user": "ops",
            "ansible_ssh_private_key_file": "/keys/id",
            "ansible_ssh_common_args": f"{NO_CONFIG} -o UserKnownHostsFile=/kh "
            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes",
        }
    )
    assert (found.address, found.port, found.user) == ("10.0.0.5", 2222, "ops")
    assert found.key_files == ("/keys/id",) and found.identities_only
    assert found.known_hosts[0] == "/kh" and found.strict
    assert found.jump is None and found.proxy_command is None


def test_ssh_config_host_blocks_fill_in_what_the_inventory_leaves_out(ssh_config: Path):
    found = settings({"ansible_host": "bastion", "ansible_ssh_common_args": f"-F {ssh_config}"})
    assert (found.address, found.port, found.user) == ("192.0.2.10", 2200, "jumper")
    assert found.key_files == ("/keys/bastion", "/keys/fleet")
    assert found.known_hosts[0] == "/etc/fleet/known_hosts" and found.strict


def test_inventory_vars_win_over_ssh_config(ssh_config: Path):
    found = settings(
        {
            "ansible_host": "bastion",
            "ansible_port": 22,
            "ansible_user": "root",
            "ansible_ssh_common_args": f"-F {ssh_config}",
        }
    )
    assert (found.address, found.port, found.user) == ("192.0.2.10", 22, "root")


@pytest.mark.parametrize(
    ("jump", "expected"),
    [
        ("ops@198.51.100.7:2222", ("198.51.100.7", 2222, "ops")),
        ("198.51.100.7", ("198.51.100.7", 22, getpass.getuser())),
        ("ssh://ops@198.51.100.7:2022", ("198.51.100.7", 2022, "ops")),
        ("ops@[2001:db8::7]:2222", ("2001:db8::7", 2222, "ops")),
    ],
)
def test_proxyjump_forms_name_the_jump_host(jump: str, expected: tuple[str, int, str]):
    for args in (f"-o ProxyJump={jump}", f"-J {jump}"):
        found = settings(
            {"ansible_host": "10.0.0.5", "ansible_ssh_common_args": f"{NO_CONFIG} -o User=t {args}"}
        )
        assert (found.address, found.user) == ("10.0.0.5", "t") and found.jump is not None
        hop = found.jump
        # The jump process gets the hop's own user and port, never the target's -o options.
        assert (hop.address, hop.port, hop.user) == expected, args
        assert hop.name == jump.removeprefix("ssh://") and hop.jump is None


def test_jump_host_is_resolved_through_the_same_ssh_config(ssh_config: Path):
    found = settings(
        {
            "ansible_host": "10.0.0.5",
            "ansible_ssh_private_key_file": "/keys/target-only",
            "ansible_ssh_common_args": f"-F {ssh_config} -o ProxyJump=bastion",
        }
    )
    assert found.jump is not None
    hop = found.jump
    assert (hop.address, hop.port, hop.user) == ("192.0.2.10", 2200, "jumper")
    assert hop.key_files == ("/keys/bastion", "/keys/fleet")  # not /keys/target-only
    assert found.key_files == ("/keys/target-only", "/keys/fleet")


def test_several_hops_chain_from_the_first(ssh_config: Path):
    found = settings(
        {
            "ansible_host": "10.0.0.5",
            "ansible_ssh_common_args": f"-F {ssh_config} -J first@203.0.113.1,bastion",
        }
    )
    assert found.jump is not None and found.jump.jump is not None
    assert found.jump.address == "192.0.2.10"  # the last hop talks to the target
    assert (found.jump.jump.address, found.jump.jump.user) == ("203.0.113.1", "first")
    assert found.jump.jump.jump is None


def test_proxycommand_is_used_with_its_tokens_expanded():
    found = settings(
        {
            "ansible_host": "10.0.0.5",
            "ansible_port": 2222,
            "ansible_ssh_common_args": f"{NO_CONFIG} -o 'ProxyCommand=nc -x proxy %h %p'",
        }
    )
    assert found.proxy_command == "nc -x proxy 10.0.0.5 2222" and found.jump is None


def test_host_key_checking_stays_on_unless_the_ssh_args_turn_it_off():
    base = {"ansible_ssh_common_args": NO_CONFIG}
    assert settings(base).strict
    assert settings({**base, "ansible_host_key_checking": False}).strict
    off = {"ansible_ssh_common_args": f"{NO_CONFIG} -o StrictHostKeyChecking=no"}
    assert not settings(off).strict


def test_password_is_used_but_never_shown():
    found = settings({"ansible_ssh_common_args": NO_CONFIG, "ansible_password": "s3cret-pw"})
    assert found.password == "s3cret-pw" and "s3cret-pw" not in repr(found)


def test_bad_ssh_option_is_one_line():
    problems = preflight.check({"edge1-1": {"ansible_ssh_common_args": "-o Bogus=1"}}, 1)
    assert problems == {
        "edge1-1": "edge1-1: ssh refuses the inventory's SSH settings: "
        "command-line: line 0: Bad configuration option: bogus"
    }


@pytest.fixture
def silent_server() -> Iterator[tuple[int, Callable[[bytes], None]]]:
    """A local TCP server that accepts and then sends what it is told (or nothing)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    greeting = [b""]
    conns: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conns.append(conn)
            if greeting[0]:
                conn.sendall(greeting[0])

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1], lambda text: greeting.__setitem__(0, text)
    server.close()
    for conn in conns:
        conn.close()


def closed_port() -> int:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = int(closed.getsockname()[1])
    closed.close()
    return port


def local(port: int, args: str = "") -> dict[str, object]:
    return {
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_ssh_common_args": f"{NO_CONFIG} {args}",
    }


def test_preflight_says_why_in_one_line(silent_server: tuple[int, Callable[[bytes], None]]):
    port, greet = silent_server
    refused = closed_port()
    hosts = {"refused": local(refused), "silent": local(port)}
    assert preflight.check(hosts, timeout=0.5) == {
        "refused": f"refused: connection refused (127.0.0.1:{refused})",
        "silent": f"silent: no SSH greeting within 0.5 s (127.0.0.1:{port})",
    }
    greet(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    assert preflight.check({"silent": hosts["silent"]}, timeout=0.5) == {
        "silent": f"silent: no SSH server on 127.0.0.1:{port}"
    }


def test_a_failing_jump_host_is_named_in_the_line():
    refused = closed_port()
    hosts = {"edge1-1": local(22, f"-o ProxyJump=ops@127.0.0.1:{refused}")}
    assert preflight.check(hosts, timeout=0.5) == {
        "edge1-1": f"edge1-1: via jump host ops@127.0.0.1:{refused} (127.0.0.1:{refused}): "
        f"connection refused (127.0.0.1:{refused})"
    }


def test_a_failing_proxycommand_says_what_it_said(tmp_path: Path):
    command = tmp_path / "proxy"
    command.write_text(
        "#!/bin/sh\necho 'connecting to %s'\necho no route to the bastion >&2\nexit 1\n"
    )
    command.chmod(0o755)
    hosts = {"edge1-1": local(22, f"-o 'ProxyCommand={command} %h'")}
    assert preflight.check(hosts, timeout=2) == {
        "edge1-1": "edge1-1: ProxyCommand exited with 1: no route to the bastion"
    }


def test_certificate_file_from_ssh_config_is_presented_with_its_key(tmp_path: Path):
    for name in ("ca", "id"):
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)]
        subprocess.run(keygen, check=True)
    sign = ["ssh-keygen", "-q", "-s", str(tmp_path / "ca"), "-I", "ops", "-n", "root"]
    subprocess.run([*sign, str(tmp_path / "id.pub")], check=True)
    certificate = tmp_path / "certs" / "ops-cert.pub"  # not beside the key: paramiko misses it
    certificate.parent.mkdir()
    (tmp_path / "id-cert.pub").rename(certificate)
    config = tmp_path / "ssh_config"
    config.write_text(f"IdentityFile {tmp_path / 'id'}\nCertificateFile {certificate}\n")
    found = settings({"ansible_ssh_common_args": f"-F {config}"})
    assert found.certificate == str(certificate)
    key = preflight._certified_key(found)
    assert key is not None and key.public_blob is not None
    assert key.public_blob.key_type == "ssh-ed25519-cert-v01@openssh.com"


def test_a_jump_host_loop_is_one_line(tmp_path: Path):
    config = tmp_path / "ssh_config"
    config.write_text("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    hosts = {"edge1-1": {"ansible_host": "a", "ansible_ssh_common_args": f"-F {config}"}}
    assert preflight.check(hosts, timeout=5) == {"edge1-1": "edge1-1: more than 8 ProxyJump hops"}
