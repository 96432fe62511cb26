"""The SSH settings Ansible's ssh connection will use for a host, resolved by OpenSSH itself.

Ansible starts `ssh <ssh_args> -o Port=.. -o IdentityFile=".." -o User=".." <ssh_common_args>
<ssh_extra_args> HOST` (`_build_command` in ansible's ssh connection plugin). Given the same
words, `ssh -G` prints what that connection resolves to: ssh_config Host and Match blocks,
ProxyJump and ProxyCommand, identity and certificate files, known_hosts files. Asking ssh
rather than re-deriving options by hand keeps the pre-flight from rejecting a host Ansible
would reach.

A ProxyJump hop is resolved the way ssh starts its own jump process: only the hop's user and
port, the earlier hops and `-F` carry over, never the target's `-o` options.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from paramiko.config import SSHConfig

from aiorch.ansible.runner import SSH_ARGS

MAX_HOPS = 8
_LENIENT = ("no", "off", "false", "accept-new")  # StrictHostKeyChecking values that admit new keys


class ResolveError(Exception):
    """ssh cannot say how it would connect (no ssh, a bad option); the message says why."""


@dataclass(frozen=True)
class Endpoint:
    """One SSH server to log in to, as `ssh -G` resolved it, and how to get to it."""

    name: str  # in messages: the inventory host, or a jump host as the inventory wrote it
    address: str
    port: int
    user: str
    key_files: tuple[str, ...]
    certificate: str | None
    identities_only: bool
    known_hosts: tuple[str, ...]
    strict: bool
    jump: Endpoint | None = None  # the server this one is reached through (ProxyJump)
    proxy_command: str | None = None
    password: str | None = field(default=None, repr=False)


def for_host(name: str, hostvars: Mapping[str, Any], timeout: float) -> Endpoint:
    """How Ansible's ssh connection reaches inventory host `name` with its merged vars."""
    password = _first(hostvars, "ansible_password", "ansible_ssh_pass", "ansible_ssh_password")
    endpoint = resolve(ansible_ssh_words(name, hostvars), name=name, timeout=timeout)
    return replace(endpoint, password=str(password) if password else None)


def ansible_ssh_words(name: str, hostvars: Mapping[str, Any]) -> list[str]:
    """The options and destination Ansible's ssh connection gives ssh for this host.

    All but `ansible_host_key_checking`: host keys are checked whatever the inventory says,
    unless its ssh args say `StrictHostKeyChecking=no` themselves.
    """
    words = _split(hostvars.get("ansible_ssh_args") or SSH_ARGS)
    if (port := _first(hostvars, "ansible_port", "ansible_ssh_port")) is not None:
        words += ["-o", f"Port={port}"]
    key = _first(hostvars, "ansible_private_key_file", "ansible_ssh_private_key_file")
    if key:
        words += ["-o", f'IdentityFile="{key}"']
    if user := _first(hostvars, "ansible_user", "ansible_ssh_user"):
        words += ["-o", f'User="{user}"']
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        words += _split(hostvars.get(var) or "")
    address = _first(hostvars, "ansible_host", "ansible_ssh_host") or name
    return [*words, "--", str(address)]


def resolve(words: Sequence[str], *, name: str, timeout: float, hops: int = 0) -> Endpoint:
    """`ssh -G WORDS` as an Endpoint, with any ProxyJump hops resolved in turn."""
    settings = _ssh_g(words, timeout)
    if settings.get("proxyjump"):
        if hops >= MAX_HOPS:
            raise ResolveError(f"more than {MAX_HOPS} ProxyJump hops")
        *earlier, last = settings["proxyjump"].split(",")
        hop_words, hop_name = _jump_words(last)
        before = ["-J", ",".join(earlier)] if earlier else []
        jump = resolve(
            [*before, *_config_file(words), *hop_words],
            name=hop_name,
            timeout=timeout,
            hops=hops + 1,
        )
    else:
        jump = None
    known_hosts = f"{settings['userknownhostsfile']} {settings.get('globalknownhostsfile', '')}"
    certificate = settings.get("certificatefile")
    return Endpoint(
        name=name,
        address=settings["hostname"],
        port=int(settings["port"]),
        user=settings["user"],
        key_files=tuple(settings.get("identityfile", [])),
        certificate=os.path.expanduser(certificate) if certificate not in (None, "none") else None,
        identities_only=settings.get("identitiesonly") == "yes",
        known_hosts=tuple(f for f in known_hosts.split() if f != "none"),
        strict=settings.get("stricthostkeychecking", "ask").lower() not in _LENIENT,
        jump=jump,
        proxy_command=None if jump else settings.get("proxycommand"),
    )


def _ssh_g(words: Sequence[str], timeout: float) -> dict[str, Any]:
    """What ssh would use, keys lower-cased; tokens such as %h in ProxyCommand expanded."""
    try:
        proc = subprocess.run(
            ["ssh", "-G", *words],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ResolveError("ssh not found (Ansible's ssh connection needs OpenSSH)") from None
    except subprocess.TimeoutExpired:
        raise ResolveError(f"'ssh -G' did not answer within {timeout:g} s") from None
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if "Pseudo-terminal" not in ln]
        reason = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise ResolveError(f"ssh refuses the inventory's SSH settings: {reason}")
    # `ssh -G` starts with "host NAME", which paramiko would read as a Host block.
    host_line, _, settings = proc.stdout.partition("\n")
    return dict(SSHConfig.from_text(settings).lookup(host_line.removeprefix("host ")))


def _jump_words(hop: str) -> tuple[list[str], str]:
    """ssh's own arguments for its jump process to `[ssh://][user@]host[:port]`, and a name.

    As ssh parses the hop: `[...]` holds an IPv6 address, a single colon comes before a port.
    """
    user, _, host = hop.removeprefix("ssh://").rpartition("@")
    port = ""
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":")
    elif host.count(":") == 1:
        host, port = host.split(":")
    words = [*(["-l", user] if user else []), *(["-p", port] if port else []), "--", host]
    shown = f"[{host}]" if ":" in host and port else host
    return words, (f"{user}@" if user else "") + shown + (f":{port}" if port else "")


def _config_file(words: Sequence[str]) -> list[str]:
    """`-F FILE` from ssh's options (ssh hands it on to its jump process), or nothing."""
    for index, word in enumerate(words):
        if word == "--":
            break
        if word == "-F" and index + 1 < len(words):
            return ["-F", words[index + 1]]
        if word.startswith("-F") and len(word) > 2:
            return ["-F", word[2:]]
    return []


def _split(args: object) -> list[str]:
    """Ansible's own splitting of ssh arg strings (shlex, empty words dropped)."""
    return [word.strip() for word in shlex.split(str(args)) if word.strip()]


def _first(hostvars: Mapping[str, Any], *names: str) -> Any:
    return next((hostvars[n] for n in names if hostvars.get(n) is not None), None)
