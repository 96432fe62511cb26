"""Which Ansible vars change how Ansible connects to a host or escalates on it.

Whoever sets one of these can run commands on the hub (`ansible_connection: local`, a
`ProxyCommand` in `ansible_ssh_common_args`, `ansible_ssh_executable`) or as root on a host
(`ansible_become_exe`, `ansible_python_interpreter: "sh -c '...' #"`), far beyond the
playbooks a run may start. The rule is deny by default: every `ansible_*` var is one, except
the few that only say where a host is and who to log in as (`DESTINATION_VARS`). Those stay
open to operators, who import the hosts they manage; choosing a login or an address does not
choose how the hub runs ssh or what runs as root.
"""

from __future__ import annotations

from collections.abc import Iterable

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


def is_connection_var(name: str) -> bool:
    """Whether var `name` changes how Ansible connects or escalates (see the module doc)."""
    lowered = name.lower()
    return lowered.startswith("ansible_") and lowered not in DESTINATION_VARS


def connection_vars(names: Iterable[str]) -> list[str]:
    """The connection vars among `names`, sorted."""
    return sorted(name for name in names if is_connection_var(str(name)))


def refuse_in_extravars(extravars: Iterable[str]) -> None:
    """Extra vars outrank every inventory var, so none may be a connection var, whoever asks:
    a 422 naming them."""
    if forbidden := connection_vars(extravars):
        raise InvalidInput(
            f"extra vars {', '.join(forbidden)}: they change how Ansible connects or escalates, "
            "which extra vars never may (a global admin sets them in the inventory)"
        )
