"""The one module that imports ansible-runner, so its quirks and environment live in one place.

ansible-inventory is run as a subprocess (no TTY), with a throw-away private data dir, and
with only the static inventory plugin that matches the file's suffix: an inventory file is
data, never something to execute, and a file that does not parse is an error, not a warning
followed by an empty inventory.

ansible-playbook runs under pexpect (events stream as they happen), with host-key checking
forced on (ansible-runner would otherwise turn it off) and extra vars in a 0600 file inside
the private data dir, never on the command line where `ps` shows them.
"""

import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ansible_runner import interface

from aiorch.errors import InvalidInput

TIMEOUT_S = 60
MAX_REASON = 300  # ansible may quote the offending data; keep the message one short line
_YAML_SUFFIXES = (".yml", ".yaml")


def list_inventory(path: Path, *, export: bool) -> dict[str, Any]:
    """`ansible-inventory -i PATH --list [--export]` as a dict.

    export=True keeps vars where they were written (group vars on groups, host vars on
    hosts); export=False gives each host its merged vars, as a playbook would see them.
    """
    fmt, plugin = ("YAML", "yaml") if path.suffix.lower() in _YAML_SUFFIXES else ("INI", "ini")
    _use_own_ansible()
    status: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="aiorch-ansible-") as scratch:
        response, error = interface.get_inventory(
            action="list",
            inventories=[str(path.resolve())],
            response_format="json",
            export=export,
            quiet=True,
            runner_mode="subprocess",
            private_data_dir=scratch,
            host_cwd=scratch,  # so a stray ./ansible.cfg of the caller is not picked up
            envvars=_environment(plugin, scratch),
            timeout=TIMEOUT_S,
            status_handler=lambda data, runner_config: status.update(data),
        )
    if isinstance(response, dict) and status.get("status") == "successful":
        return response
    if status.get("status") == "timeout":
        reason = f"ansible-inventory did not finish within {TIMEOUT_S} s"
    else:
        reason = _condense(error or "", path)
    raise InvalidInput(f"{path.name} is not a valid {fmt} inventory: {reason}")


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
    """Ansible's multi-line failure report, reduced to its root cause on one line."""
    text = stderr.replace(str(path.resolve()), path.name)
    if "<<< caused by >>>" in text:
        cause = text.rsplit("<<< caused by >>>", 1)[1]
        cause = re.split(r"^(?:Origin:|\[ERROR\]|\[WARNING\])", cause, maxsplit=1, flags=re.M)[0]
    else:
        errors = re.findall(r"^\[ERROR\]: (.*)$", text, flags=re.M)
        cause = errors[-1] if errors else text
    cause = " ".join(cause.split()).removeprefix("Failed to parse inventory: ")
    if len(cause) > MAX_REASON:
        cause = cause[: MAX_REASON - 3] + "..."
    return cause or "ansible-inventory failed without saying why"


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
) -> RunResult:
    """Run `playbook` on `inventory` (optionally `--limit` to hosts); blocks until it ends.

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

    flags = [flag for flag, on in (("--check", check), ("--diff", diff)) if on]
    runner = interface.run(
        ident=run_id,
        private_data_dir=str(private_data_dir),
        project_dir=str(playbook.parent),
        playbook=str(playbook),
        inventory=str(inventory),
        limit=",".join(limit) if limit else None,
        forks=forks,
        cmdline=" ".join(flags) or None,
        extravars=dict(extravars or {}),
        envvars=_playbook_environment(playbook.parent),
        settings={"suppress_ansible_output": True, "pexpect_timeout": 1},
        quiet=True,
        event_handler=on_event,
        cancel_callback=cancel_callback or (lambda: False),
    )
    return RunResult(status=runner.status, rc=runner.rc, recap=recap)


def _playbook_environment(playbook_dir: Path) -> dict[str, str]:
    env = {
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": SSH_ARGS,
        # ansible-runner sets this to False unless told otherwise; an unknown host key must
        # stop the run, whatever the inventory says about known_hosts files.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
    }
    config = playbook_dir / "ansible.cfg"
    if config.is_file():  # roles_path and friends of the playbooks' own folder
        env["ANSIBLE_CONFIG"] = str(config)
    return env


def _recap(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    hosts = {host for key in _STATS for host in (stats.get(key) or {})}
    return {
        host: {name: int((stats.get(key) or {}).get(host, 0)) for key, name in _STATS.items()}
        for host in sorted(hosts)
    }
