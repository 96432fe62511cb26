"""Pre-flight: can each target host be reached and managed, before Ansible is started?

One SSH connection per host, in parallel, with the inventory's own address, port, user,
key and known_hosts, host-key checking on, and a short timeout. A failing host gets one line
that says why ("host key not known (known_hosts ...)", "connection refused (...)"), so a run
over many hosts reports a dead box in a line instead of a timeout deep in Ansible's output.
"""

from __future__ import annotations

import getpass
import logging
import shlex
import socket
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import paramiko

from aiorch.ansible.runner import list_inventory

# The problems are reported here, one line per host; paramiko's own tracebacks (e.g. for a
# host that accepts TCP but never says hello) would only repeat them in the hub log.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")
SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "paramiko_ssh")
_NO_PYTHON, _NO_SUDO = 10, 11


@dataclass(frozen=True)
class Target:
    """How Ansible would connect to one host, from its merged inventory vars."""

    name: str
    address: str
    port: int
    user: str
    key_file: str | None
    known_hosts: tuple[str, ...]
    strict: bool
    python: str


def target(name: str, hostvars: Mapping[str, Any]) -> Target:
    options, key_file = _ssh_options(hostvars)
    key_file = hostvars.get("ansible_ssh_private_key_file") or key_file
    files = options.get("userknownhostsfile", " ".join(DEFAULT_KNOWN_HOSTS)).split()
    python = str(hostvars.get("ansible_python_interpreter") or "python3")
    return Target(
        name=name,
        address=str(hostvars.get("ansible_host") or name),
        port=int(hostvars.get("ansible_port") or options.get("port") or 22),
        user=str(hostvars.get("ansible_user") or options.get("user") or getpass.getuser()),
        key_file=str(Path(key_file).expanduser()) if key_file else None,
        known_hosts=tuple(str(Path(f).expanduser()) for f in files),
        strict=options.get("stricthostkeychecking", "yes").lower() not in ("no", "off"),
        python=python if python.startswith("/") else "python3",
    )


def check_inventory(inventory: Path, hosts: Iterable[str], timeout: float) -> dict[str, str]:
    """Check `hosts` as `inventory` describes them (merged vars, as a playbook sees them).

    Hosts Ansible reaches other than over SSH (`ansible_connection: local`, ...) pass.
    """
    hostvars = list_inventory(inventory, export=False).get("_meta", {}).get("hostvars", {})
    over_ssh = [
        host
        for host in hosts
        if hostvars.get(host, {}).get("ansible_connection", "ssh") in SSH_CONNECTIONS
    ]
    return check([target(host, hostvars.get(host, {})) for host in over_ssh], timeout)


def check(targets: Iterable[Target], timeout: float) -> dict[str, str]:
    """{host: the one-line problem} for every target that fails; reachable hosts are absent."""
    found = list(targets)
    if not found:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(found))) as pool:
        problems = pool.map(lambda t: _check_one(t, timeout), found)
        return {t.name: problem for t, problem in zip(found, problems, strict=True) if problem}


def _ssh_options(hostvars: Mapping[str, Any]) -> tuple[dict[str, str], str | None]:
    """`-o Key=Value` options (keys lower-cased) and `-i FILE` from the inventory's ssh args."""
    words: list[str] = []
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args"):
        words += shlex.split(str(hostvars.get(var) or ""))
    options: dict[str, str] = {}
    key_file = None
    for flag, value in pairwise([*words, ""]):
        if flag == "-i":
            key_file = value
        option = value if flag == "-o" else flag[2:] if flag.startswith("-o") else ""
        name, sep, setting = option.partition("=")
        if sep:
            options.setdefault(name.strip().lower(), setting.strip())  # ssh: first one wins
    return options, key_file


def _check_one(t: Target, timeout: float) -> str | None:
    try:
        sock = _greeted_socket(t, timeout)
    except _Unreachable as exc:
        return f"{t.name}: {exc}"
    client = paramiko.SSHClient()
    try:
        for path in t.known_hosts:
            if Path(path).is_file():
                client.get_host_keys().load(path)
        policy = paramiko.RejectPolicy() if t.strict else paramiko.WarningPolicy()
        client.set_missing_host_key_policy(policy)
        client.connect(
            t.address,
            port=t.port,
            username=t.user,
            key_filename=t.key_file,
            allow_agent=t.key_file is None,
            look_for_keys=t.key_file is None,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
        return _check_host(client, t, timeout)
    except paramiko.BadHostKeyException:
        return f"{t.name}: host key does not match known_hosts ({', '.join(t.known_hosts)})"
    except paramiko.AuthenticationException:
        key = f"key {t.key_file}" if t.key_file else "agent or default keys"
        return f"{t.name}: authentication failed as {t.user} ({key})"
    except paramiko.SSHException as exc:
        if "known_hosts" in str(exc):
            return f"{t.name}: host key not known (known_hosts {', '.join(t.known_hosts)})"
        return f"{t.name}: SSH failed ({t.address}:{t.port}): {exc}"
    except OSError as exc:
        return f"{t.name}: SSH failed ({t.address}:{t.port}): {exc.strerror or exc}"
    finally:
        client.close()
        sock.close()


class _Unreachable(Exception):
    """The host cannot be talked to at all; the message says how it failed."""


def _greeted_socket(t: Target, timeout: float) -> socket.socket:
    """A TCP connection on which the server has started to greet (SSH-...), or _Unreachable.

    Done here rather than in paramiko for clear reasons: a frozen host accepts the connection
    (the kernel answers) and then says nothing, which paramiko reports as "No existing session".
    """
    where = f"{t.address}:{t.port}"
    try:
        sock = socket.create_connection((t.address, t.port), timeout=timeout)
    except ConnectionRefusedError:
        raise _Unreachable(f"connection refused ({where})") from None
    except TimeoutError:
        raise _Unreachable(f"no answer within {timeout:g} s ({where})") from None
    except socket.gaierror as exc:
        raise _Unreachable(f"cannot resolve {t.address}: {exc.strerror}") from None
    except OSError as exc:
        raise _Unreachable(f"cannot connect to {where}: {exc.strerror or exc}") from None
    try:
        greeting = sock.recv(4, socket.MSG_PEEK)
    except OSError as exc:
        sock.close()
        if isinstance(exc, TimeoutError):
            raise _Unreachable(f"no SSH greeting within {timeout:g} s ({where})") from None
        raise _Unreachable(f"connection to {where} failed: {exc.strerror or exc}") from None
    if not greeting.startswith(b"SSH-"):
        sock.close()
        raise _Unreachable(f"no SSH server on {where}")
    return sock


def _check_host(client: paramiko.SSHClient, t: Target, timeout: float) -> str | None:
    """python present and, for a user other than root, `sudo -n` working: one round trip."""
    script = (
        f"command -v {shlex.quote(t.python)} >/dev/null 2>&1 || exit {_NO_PYTHON}; "
        f'[ "$(id -u)" = 0 ] || sudo -n true >/dev/null 2>&1 || exit {_NO_SUDO}'
    )
    _, stdout, _ = client.exec_command(script, timeout=timeout)
    if not stdout.channel.status_event.wait(timeout):
        return f"{t.name}: checking python and sudo took over {timeout:g} s"
    code = stdout.channel.recv_exit_status()
    if code == _NO_PYTHON:
        return f"{t.name}: {t.python} not found (Ansible needs it)"
    if code == _NO_SUDO:
        return f"{t.name}: 'sudo -n true' failed as {t.user} (privilege escalation not possible)"
    if code != 0:
        return f"{t.name}: the pre-flight check exited with {code}"
    return None
