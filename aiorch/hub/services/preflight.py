"""Pre-flight: can each target host be reached and managed, before Ansible is started?

One SSH login per host, in parallel, with the settings Ansible's ssh connection will use
(`ssh_settings`: the inventory's vars, ssh_config, ProxyJump hops, ProxyCommand), host-key
checking on, and a short timeout. A failing host gets one line that says why ("host key not
known (known_hosts ...)", "connection refused (...)", "via jump host bastion (...): ..."), so a
run over many hosts reports a dead box in a line instead of a timeout deep in Ansible's output.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import paramiko

from aiorch.ansible.runner import list_inventory
from aiorch.hub.services.ssh_settings import Endpoint, ResolveError, for_host

# The problems are reported here, one line per host; paramiko's own tracebacks (e.g. for a
# host that accepts TCP but never says hello) would only repeat them in the hub log.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

SSH_CONNECTIONS = ("ssh", "smart", "paramiko", "paramiko_ssh")
_NO_PYTHON, _NO_SUDO = 10, 11


def check_inventory(inventory: Path, hosts: Iterable[str], timeout: float) -> dict[str, str]:
    """Check `hosts` as `inventory` describes them (merged vars, as a playbook sees them).

    Hosts Ansible reaches other than over SSH (`ansible_connection: local`, ...) pass.
    """
    hostvars = list_inventory(inventory, export=False).get("_meta", {}).get("hostvars", {})
    over_ssh = {
        host: hostvars.get(host, {})
        for host in hosts
        if hostvars.get(host, {}).get("ansible_connection", "ssh") in SSH_CONNECTIONS
    }
    return check(over_ssh, timeout)


def check(hosts: Mapping[str, Mapping[str, Any]], timeout: float) -> dict[str, str]:
    """{host: the one-line problem} for each failing host of {name: merged vars}."""
    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        problems = pool.map(lambda item: _check_one(item[0], item[1], timeout), hosts.items())
        return {name: problem for name, problem in zip(hosts, problems, strict=True) if problem}


def _check_one(name: str, hostvars: Mapping[str, Any], timeout: float) -> str | None:
    try:
        target = for_host(name, hostvars, timeout)
    except ResolveError as exc:
        return f"{name}: {exc}"
    python = str(hostvars.get("ansible_python_interpreter") or "python3")
    python = python if python.startswith("/") else "python3"
    with ExitStack() as stack:
        try:
            client = _login(target, timeout, stack)
            problem = _check_host(client, target.user, python, timeout)
        except _Failure as exc:
            via = exc.at is not target
            where = f"via jump host {exc.at.name} ({_where(exc.at)}): " if via else ""
            return f"{name}: {where}{exc}"
        except (paramiko.SSHException, OSError) as exc:
            problem = f"checking python and sudo failed ({_where(target)}): {exc}"
    return f"{name}: {problem}" if problem else None


class LoginFailed(Exception):
    """No SSH session with a host (unresolvable, unreachable, refused); the message says why."""


def open_session(
    name: str, hostvars: Mapping[str, Any], timeout: float, stack: ExitStack
) -> paramiko.SSHClient:
    """An SSH session with inventory host `name` the way Ansible reaches it (its jump hosts,
    keys and pinned known_hosts); closed with `stack`. For the hub's own calls to hosts, such
    as slurmrestd, which listens on the controller's loopback only."""
    try:
        return _login(for_host(name, hostvars, timeout), timeout, stack)
    except (ResolveError, _Failure) as exc:
        raise LoginFailed(f"{name}: {exc}") from None


class _Failure(Exception):
    """Logging in to `at` (the host, or a jump host on the way) failed; the message says why."""

    def __init__(self, reason: str, at: Endpoint) -> None:
        super().__init__(reason)
        self.at = at


def _login(end: Endpoint, timeout: float, stack: ExitStack) -> paramiko.SSHClient:
    """An SSH session with `end`, through its jump hosts; what it opens goes on `stack`."""
    sock = _transport(end, timeout, stack)
    client = paramiko.SSHClient()
    stack.callback(client.close)
    for path in end.known_hosts:
        if Path(path).is_file():
            client.get_host_keys().load(path)
    policy = paramiko.RejectPolicy() if end.strict else paramiko.WarningPolicy()
    client.set_missing_host_key_policy(policy)
    try:
        client.connect(
            end.address,
            port=end.port,
            username=end.user,
            password=end.password,
            pkey=_certified_key(end),
            key_filename=list(_existing(end.key_files)) or None,
            allow_agent=not end.identities_only,
            look_for_keys=False,  # `ssh -G` has listed the default keys ssh would try
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except (paramiko.SSHException, OSError) as exc:
        ended = isinstance(sock, _Proxy) and _proxy_ended(sock)
        raise _Failure(ended or _login_problem(exc, end), end) from None
    return client


class _Proxy(paramiko.ProxyCommand):
    """paramiko's ProxyCommand, with a close that also copes with a command that has exited.

    paramiko closes the socket from its transport thread and from the client, and its close
    kills the pid blindly, which fails once the process has been reaped.
    """

    def close(self) -> None:
        with suppress(ProcessLookupError):
            super().close()
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _proxy_ended(proxy: _Proxy) -> str | None:
    """Why a ProxyCommand ended (exit status, last line on stderr); None while it runs."""
    try:
        code = proxy.process.wait(timeout=1)
    except subprocess.TimeoutExpired:
        return None
    os.set_blocking(proxy.process.stderr.fileno(), False)  # a child may still hold it open
    lines = (proxy.process.stderr.read() or b"").decode(errors="replace").strip().splitlines()
    return f"ProxyCommand exited with {code}" + (f": {lines[-1]}" if lines else "")


def _transport(
    end: Endpoint, timeout: float, stack: ExitStack
) -> socket.socket | paramiko.Channel | _Proxy:
    """What `end`'s SSH session runs over: a channel through its jump host, its ProxyCommand,
    or a TCP connection on which the server has started to greet."""
    if end.jump is not None:
        transport = _login(end.jump, timeout, stack).get_transport()
        if transport is None:
            raise _Failure("the session closed at once", end.jump)
        try:
            channel = transport.open_channel(
                "direct-tcpip", (end.address, end.port), ("127.0.0.1", 0), timeout=timeout
            )
        except paramiko.ChannelException as exc:
            reason = f"jump host {end.jump.name} cannot connect to {_where(end)}: {exc.text}"
            raise _Failure(reason, end) from None
        except paramiko.SSHException as exc:
            raise _Failure(f"jump host {end.jump.name} cannot forward: {exc}", end) from None
        stack.callback(channel.close)
        return channel
    if end.proxy_command is not None:
        try:
            proxy = _Proxy(end.proxy_command)
        except (OSError, ValueError) as exc:
            raise _Failure(f"ProxyCommand cannot start: {exc}", end) from None
        stack.callback(proxy.close)
        return proxy
    try:
        sock = _greeted_socket(end.address, end.port, timeout)
    except _Unreachable as exc:
        raise _Failure(str(exc), end) from None
    stack.callback(sock.close)
    return sock


def _certified_key(end: Endpoint) -> paramiko.PKey | None:
    """The first identity with `end`'s CertificateFile loaded into it; None without one.

    paramiko finds `KEY-cert.pub` beside a key by itself, but not a CertificateFile elsewhere.
    """
    keys = list(_existing(end.key_files))
    if end.certificate is None or not keys or not Path(end.certificate).is_file():
        return None
    try:
        key = paramiko.PKey.from_path(keys[0])
        key.load_certificate(end.certificate)
    except (paramiko.SSHException, OSError, ValueError):
        return None  # paramiko's own attempt with the key files then says what is wrong
    return key


def _login_problem(exc: Exception, end: Endpoint) -> str:
    known_hosts = ", ".join(_existing(end.known_hosts)) or "none of " + ", ".join(end.known_hosts)
    if isinstance(exc, paramiko.BadHostKeyException):
        return f"host key does not match known_hosts ({known_hosts})"
    if isinstance(exc, paramiko.AuthenticationException):
        keys = ", ".join(_existing(end.key_files))
        how = f"key {keys}" if keys else "agent or password, no key file found"
        return f"authentication failed as {end.user} ({how})"
    if isinstance(exc, paramiko.ProxyCommandFailure):
        return f"ProxyCommand failed: {exc.error}"
    if isinstance(exc, paramiko.SSHException):
        if "known_hosts" in str(exc):
            return f"host key not known (known_hosts {known_hosts})"
        if "protocol banner" in str(exc):  # through a jump host or ProxyCommand
            return f"no SSH greeting ({_where(end)})"
        return f"SSH failed ({_where(end)}): {exc}"
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return f"SSH failed ({_where(end)}): {text}"


def _where(end: Endpoint) -> str:
    return f"{end.address}:{end.port}"


def _existing(paths: Iterable[str]) -> Iterable[str]:
    return (path for path in paths if Path(path).is_file())


class _Unreachable(Exception):
    """The host cannot be talked to at all; the message says how it failed."""


def _greeted_socket(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection on which the server has started to greet (SSH-...), or _Unreachable.

    Done here rather than in paramiko for clear reasons: a frozen host accepts the connection
    (the kernel answers) and then says nothing, which paramiko reports as "No existing session".
    """
    where = f"{address}:{port}"
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except ConnectionRefusedError:
        raise _Unreachable(f"connection refused ({where})") from None
    except TimeoutError:
        raise _Unreachable(f"no answer within {timeout:g} s ({where})") from None
    except socket.gaierror as exc:
        raise _Unreachable(f"cannot resolve {address}: {exc.strerror}") from None
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


def _check_host(client: paramiko.SSHClient, user: str, python: str, timeout: float) -> str | None:
    """python present and, for a user other than root, `sudo -n` working: one round trip."""
    script = (
        f"command -v {shlex.quote(python)} >/dev/null 2>&1 || exit {_NO_PYTHON}; "
        f'[ "$(id -u)" = 0 ] || sudo -n true >/dev/null 2>&1 || exit {_NO_SUDO}'
    )
    _, stdout, _ = client.exec_command(script, timeout=timeout)
    if not stdout.channel.status_event.wait(timeout):
        return f"checking python and sudo took over {timeout:g} s"
    code = stdout.channel.recv_exit_status()
    if code == _NO_PYTHON:
        return f"{python} not found (Ansible needs it)"
    if code == _NO_SUDO:
        return f"'sudo -n true' failed as {user} (privilege escalation not possible)"
    if code != 0:
        return f"the pre-flight check exited with {code}"
    return None
