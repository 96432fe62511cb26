"""Which Ansible vars reach past the playbooks a run may start: those that change how Ansible
connects to a host or escalates on it, and any value that is a template.

Whoever sets a connection var can run commands on the hub (`ansible_connection: local`, a
`ProxyCommand` in `ansible_ssh_common_args`, `ansible_ssh_executable`) or as root on a host
(`ansible_become_exe`, `ansible_python_interpreter: "sh -c '...' #"`). The rule is deny by
default: every `ansible_*` var is one, except the few that only say where a host is and who to
log in as (`DESTINATION_VARS`). Those stay open to operators, who import the hosts they
manage; choosing a login or an address does not choose how the hub runs ssh or what runs as
root.

The roles also copy a file from the hub machine to hosts where a var names one: the hub CA
(`aiorch_hub_ca_file`, which every run gets, and the roles' `aiorch_*_ca_file`) and the site
repository's keyring (`aiorch_*_keyring_file`). Pointed at `ca.key`, such a var would hand the
CA's key to a host, so these are held to the same rule.

A template (`{{ ... }}`, `{% ... %}`) in any var is evaluated on the hub when a playbook uses
the var, and `lookup('pipe', ...)` in one runs a command there: ansible-core treats inventory
files and extra vars as trusted templates. So templates are held to the same rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiorch.errors import InvalidInput

DESTINATION_VARS = frozenset(
    {
        "ansible_host",
        "ansible_port",
        "ansible_user",
        "ansible_ssh_host",
        "ansible_ssh_port",
        "ansible_ssh_user",
    }
)
# aiorch_* vars with these endings name a file on the hub that the roles copy to hosts.
HUB_FILE_SUFFIXES = ("_ca_file", "_keyring_file")
_TEMPLATE_MARKS = ("{{", "{%", "{#")


def is_connection_var(name: str) -> bool:
    """Whether var `name` changes how Ansible connects or escalates, or names a file on the
    hub that the roles copy to hosts (see the module doc)."""
    lowered = name.lower()
    if lowered.startswith("aiorch_") and lowered.endswith(HUB_FILE_SUFFIXES):
        return True
    return lowered.startswith("ansible_") and lowered not in DESTINATION_VARS


def connection_vars(names: Iterable[str]) -> list[str]:
    """The connection vars among `names`, sorted."""
    return sorted(name for name in names if is_connection_var(str(name)))


def is_template(value: Any) -> bool:
    """Whether Ansible would evaluate anything in `value` (its strings, keys included)."""
    if isinstance(value, Mapping):
        return any(is_template(k) or is_template(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(is_template(v) for v in value)
    return isinstance(value, str) and any(mark in value for mark in _TEMPLATE_MARKS)


def reaching_vars(values: Mapping[str, Any]) -> list[str]:
    """The vars of `values` that reach past the playbooks: connection vars and templates."""
    return sorted(
        name for name, value in values.items() if is_connection_var(name) or is_template(value)
    )


def refuse_in_extravars(extravars: Mapping[str, Any]) -> None:
    """Extra vars outrank every inventory var, and nobody writes them for the hub to template:
    none may be a connection var or a template, whoever asks (a 422 naming them)."""
    if forbidden := reaching_vars(extravars):
        raise InvalidInput(
            f"extra vars {', '.join(forbidden)}: extra vars may not change how Ansible connects "
            "or escalates, nor hold templates ({{ }}, {% %}) the hub would evaluate "
            "(a global admin sets such vars in the inventory)"
        )
