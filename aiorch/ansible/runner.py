"""The one module that runs Ansible, so its quirks and environment live in one place.

ansible-inventory runs as a plain subprocess (no TTY), with a throw-away home and only the
static inventory plugin that matches the file's suffix: an inventory file is data, never
something to execute, and a file that does not parse is an error, not a warning followed by
an empty inventory. It is not run through ansible-runner, which writes an event file per
output line (58,000 files for a 5,000-host inventory); one deadline covers the whole parse,
the output and the memory are capped, and the process group is killed at the end.

ansible-playbook runs under ansible-runner and pexpect (events stream as they happen), with
host-key checking forced on (ansible-runner would otherwise turn it off) and extra vars in a
0600 file inside the private data dir, never on the command line where `ps` shows them.
"""

import json
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_runner import interface

from aiorch.errors import InvalidInput

TIMEOUT_S = 60
MAX_OUTPUT = 64 << 20  # bytes of ansible-inventory JSON: far over 100,000 hosts with vars
MAX_MEMORY = 4 << 30  # address space of one ansible-inventory process
MAX_REASON = 300  # ansible may quote the offending data; keep the message one short line
_YAML_SUFFIXES = (".yml", ".yaml")


class _Exceeded(Exception):
    """ansible-inventory ran past the deadline or wrote more than MAX_OUTPUT."""


def list_inventory(path: Path, *, export: bool, deadline: float | None = None) -> dict[str, Any]:
    """`ansible-inventory -i PATH --list [--export]` as a dict.

    export=True keeps vars where they were written (group vars on groups, host vars on
    hosts); export=False gives each host its merged vars, as a playbook would see them.
    `deadline` (time.monotonic) defaults to TIMEOUT_S from now.
    """
    fmt, plugin = ("YAML", "yaml") if path.suffix.lower() in _YAML_SUFFIXES else ("INI", "ini")
    deadline = time.monotonic() + TIMEOUT_S if deadline is None else deadline
    argv = [own_tool("ansible-inventory"), "-i", str(path.resolve()), "--list"]
    with tempfile.TemporaryDirectory(prefix="aiorch-ansible-") as scratch:
        try:
            rc, out, err = _run_bounded(
                argv + (["--export"] if export else []), scratch, plugin, deadline
            )
        except _Exceeded as exc:
            raise InvalidInput(f"{path.name} is not a valid {fmt} inventory: {exc}") from None
    if rc == 0:
        try:
            listed = json.loads(out)
        except ValueError:
            listed = None
        if isinstance(listed, dict):
            return listed
    reason = _condense(err.decode(errors="replace"), path)
    raise InvalidInput(f"{path.name} is not a valid {fmt} inventory: {reason}")


def _run_bounded(
    argv: list[str], scratch: str, plugin: str, deadline: float
) -> tuple[int, bytes, bytes]:
    """Run `argv` to its end, or kill its process group past `deadline` or MAX_OUTPUT."""
    env = {**os.environ, **_environment(plugin, scratch)}
    proc = subprocess.Popen(
        argv,
        cwd=scratch,  # so a stray ./ansible.cfg of the caller is not picked up
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (MAX_MEMORY, MAX_MEMORY))
        chunks: dict[int, list[bytes]] = {1: [], 2: []}
        size = 0
        with selectors.DefaultSelector() as selector:
            assert proc.stdout is not None and proc.stderr is not None
            selector.register(proc.stdout, selectors.EVENT_READ, 1)
            selector.register(proc.stderr, selectors.EVENT_READ, 2)
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Exceeded(f"ansible-inventory did not finish within {TIMEOUT_S} s")
                for key, _ in selector.select(timeout=left):
                    data = os.read(key.fd, 1 << 16)
                    if not data:
                        selector.unregister(key.fileobj)
                        continue
                    chunks[key.data].append(data)
                    size += len(data)
                    if size > MAX_OUTPUT:
                        raise _Exceeded(f"its listing is over {MAX_OUTPUT >> 20} MiB")
        rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        return rc, b"".join(chunks[1]), b"".join(chunks[2])
    except subprocess.TimeoutExpired:
        raise _Exceeded(f"ansible-inventory did not finish within {TIMEOUT_S} s") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def own_tool(tool: str) -> str:
    """The Ansible tool installed beside this interpreter, else the one on PATH."""
    own = Path(sys.executable).parent / tool
    return str(own) if own.exists() else shutil.which(tool) or tool


def _use_own_ansible() -> None:
    """ansible-runner looks ansible-inventory up on PATH; make that the one installed beside
    this interpreter, since a service started as .venv/bin/python rarely has .venv/bin on PATH."""
    own = Path(sys.executable).parent / "ansible-inventory"
    if own.exists() and shutil.which("ansible-inventory") != str(own):
        os.environ["PATH"] = os.pathsep.join([str(own.parent), os.environ.get("PATH", os.defpath)])


def _environment(plugin: str, scratch: str) -> dict[str, str]:
    return {
        "ANSIBLE_INVENTORY_ENABLED": plugin,
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
        "ANSIBLE_HOME": scratch,  # its tmp/ and any caches vanish with the scratch dir
        "ANSIBLE_NOCOLOR": "True",
    }


def _condense(stderr: str, path: Path) -> str:
    return condensed_error(stderr.replace(str(path.resolve()), path.name)).removeprefix(
        "Failed to parse inventory: "
    )


def condensed_error(text: str) -> str:
    """An Ansible tool's multi-line failure report, reduced to its root cause on one line."""
    if "<<< caused by >>>" in text:
        cause = text.rsplit("<<< caused by >>>", 1)[1]
        cause = re.split(r"^(?:Origin:|\[ERROR\]|\[WARNING\])", cause, maxsplit=1, flags=re.M)[0]
    else:
        errors = re.findall(r"^\[ERROR\]: (.*)$", text, flags=re.M)
        cause = errors[-1] if errors else text
    cause = " ".join(cause.split())
    if len(cause) > MAX_REASON:
        cause = cause[: MAX_REASON - 3] + "..."
    return cause or "it failed without saying why"


# ---- playbooks -------------------------------------------------------------------------------

DEFAULT_FORKS = 20
# ControlPersist keeps one SSH connection per host across tasks, plays and waves. These are
# ssh_args only: an inventory's ansible_ssh_common_args (known_hosts, key options) still apply.
SSH_ARGS = "-o ControlMaster=auto -o ControlPersist=60s -o ServerAliveInterval=15"
# ansible-playbook's PLAY RECAP names, from the stats event's keys.
_STATS = {
    "ok": "ok",
    "changed": "changed",
    "failures": "failed",
    "dark": "unreachable",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}

EventHandler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunResult:
    """How one ansible-playbook invocation ended.

    `status` is ansible-runner's: successful, failed, canceled or timeout. `recap` is the
    PLAY RECAP per host (ok, changed, failed, unreachable, skipped, rescued, ignored).
    """

    status: str
    rc: int | None
    recap: dict[str, dict[str, int]] = field(default_factory=dict)


def run_playbook(
    run_id: str,
    playbook: Path,
    inventory: Path,
    *,
    private_data_dir: Path,
    event_handler: EventHandler,
    limit: Sequence[str] | None = None,
    check: bool = False,
    diff: bool = False,
    forks: int = DEFAULT_FORKS,
    extravars: Mapping[str, Any] | None = None,
    cancel_callback: Callable[[], bool] | None = None,
    project_dir: Path | None = None,
    collections_path: Path | None = None,
) -> RunResult:
    """Run `playbook` on `inventory` (optionally `--limit` to hosts); blocks until it ends.

    `project_dir` is the playbook set's folder (default: the playbook's): its ansible.cfg
    and roles/ apply to every playbook in it, nested ones too. `collections_path` (a folder
    holding ansible_collections/) becomes the run's only ANSIBLE_COLLECTIONS_PATH, so a set
    runs the collections it brought and nothing the hub machine happens to have.

    `private_data_dir` must not exist yet: ansible-runner keeps extra vars and artifacts there
    and reuses (rather than rewrites) what it finds, so every invocation gets its own. The run
    id is ansible-runner's `ident`. `event_handler` sees every event, in order, as it happens.
    """
    _use_own_ansible()
    private_data_dir.mkdir(mode=0o700, parents=False)
    recap: dict[str, dict[str, int]] = {}

    def on_event(event: dict[str, Any]) -> bool:
        if event.get("event") == "playbook_on_stats":
            recap.update(_recap(event.get("event_data", {})))
        event_handler(event)
        return False  # the caller keeps the event; nothing more on disk

    project = project_dir or playbook.parent
    flags = [flag for flag, on in (("--check", check), ("--diff", diff)) if on]
    runner = interface.run(
        ident=run_id,
        private_data_dir=str(private_data_dir),
        project_dir=str(project),
        playbook=str(playbook),
        inventory=str(inventory),
        limit=",".join(limit) if limit else None,
        forks=forks,
        cmdline=" ".join(flags) or None,
        extravars=dict(extravars or {}),
        envvars=_playbook_environment(project, collections_path),
        settings={"suppress_ansible_output": True, "pexpect_timeout": 1},
        quiet=True,
        event_handler=on_event,
        cancel_callback=cancel_callback or (lambda: False),
    )
    return RunResult(status=runner.status, rc=runner.rc, recap=recap)


def _playbook_environment(project: Path, collections: Path | None) -> dict[str, str]:
    env = {
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": SSH_ARGS,
        # ansible-runner sets this to False unless told otherwise; an unknown host key must
        # stop the run, whatever the inventory says about known_hosts files.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
    }
    config = project / "ansible.cfg"
    if config.is_file():  # roles_path and friends of the set's own folder
        env["ANSIBLE_CONFIG"] = str(config)
    elif (project / "roles").is_dir():  # the environment would outrank the set's own config
        env["ANSIBLE_ROLES_PATH"] = str(project / "roles")
    if collections is not None:
        env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    return env


def _recap(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    hosts = {host for key in _STATS for host in (stats.get(key) or {})}
    return {
        host: {name: int((stats.get(key) or {}).get(host, 0)) for key, name in _STATS.items()}
        for host in sorted(hosts)
    }
