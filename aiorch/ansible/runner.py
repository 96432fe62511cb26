"""The one module that imports ansible-runner, so its quirks and environment live in one place.

ansible-inventory is run as a subprocess (no TTY), with a throw-away private data dir, and
with only the static inventory plugin that matches the file's suffix: an inventory file is
data, never something to execute, and a file that does not parse is an error, not a warning
followed by an empty inventory.
"""

import os
import re
import shutil
import sys
import tempfile
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
