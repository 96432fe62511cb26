"""A provisioned machine's last step: once the agent in its new OS enrolled with the seed's
token, it is an inventory host reached at the address its boot NIC has now, and the machine
playbook (machine.yml: site.yml, then the GPU acceptance gate where the ramdisk saw GPUs) runs
on it through the normal run path. The machine is serving when that run succeeds, and
failed_configuring when it does not: with the gate's failures, or the run named.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any

import sqlite_utils

from aiorch.errors import AiorchError
from aiorch.hub.context import HubContext
from aiorch.hub.services import gpu_acceptance, machines, runs
from aiorch.metal.contract import Inventory
from aiorch.metal.lifecycle import Event, State
from edge_agent.contract.facts import parse_facts

log = logging.getLogger("aiorch.hub.machines")
ACTOR = "hub"
KNOWN_HOSTS = "metal_known_hosts"  # in the data dir: provisioned machines' SSH host keys


def boot_address(facts: dict[str, Any], mac: str) -> str | None:
    """The first IPv4 address of the NIC with the machine's boot MAC, from the agent's facts."""
    for nic in facts.get("network_interfaces") or []:
        if isinstance(nic, dict) and str(nic.get("mac", "")).lower() == mac:
            for address in nic.get("addresses") or []:
                if isinstance(address, dict) and address.get("family") == "ipv4":
                    return str(address["address"])
    return None


def connection_vars(ctx: HubContext, machine: dict[str, Any], facts: dict[str, Any]) -> dict:
    """How Ansible reaches the new host: root, with the hub's machine key (the seed's
    authorized key), at its boot NIC's address; the hub for its agent role, as the machine
    saw it while it booted; and the GPUs the GPU gate must find."""
    known_hosts = ctx.settings.data_dir / KNOWN_HOSTS
    address = boot_address(facts, machine["mac"])
    keys = parse_facts(facts).ssh_host_keys
    if address and keys:
        pin_host_keys(known_hosts, address, keys)
    # The host keys the fresh OS made at first boot came with its agent's enrollment (its
    # one-use token, over TLS) and are pinned; an agent that sends none leaves first use.
    checking = "yes" if address and keys else "accept-new"
    found: dict[str, Any] = {
        "ansible_user": "root",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} "
        f"-o StrictHostKeyChecking={checking} -o IdentitiesOnly=yes",
    }
    if ctx.settings.metal_ssh_key is not None:
        found["ansible_ssh_private_key_file"] = str(ctx.settings.metal_ssh_key)
    if address:
        found["ansible_host"] = address
    known = Inventory.model_validate_json(machine["inventory"]) if machine["inventory"] else None
    if known is not None and known.gpus():  # the gate expects every GPU the ramdisk saw
        found["aiorch_gpu_acceptance_expect_count"] = len(known.gpus())
    if ctx.settings.metal_hub_url:
        found["aiorch_edge_agent_hub_url"] = ctx.settings.metal_hub_url
    return found


def pin_host_keys(path: Path, address: str, keys: tuple[str, ...]) -> None:
    """ADDRESS's lines in the hub's known_hosts become `keys` (a re-provisioned machine at
    an old address has new keys); written whole and renamed, never half."""
    kept = [line for line in _lines(path) if line.split(" ", 1)[0] != address]
    temporary = path.with_suffix(".tmp")
    temporary.write_text(
        "".join(f"{line}\n" for line in [*kept, *(f"{address} {k}" for k in keys)])
    )
    temporary.chmod(0o600)
    temporary.replace(path)


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def host_vars_in(
    db: sqlite_utils.Database, ctx: HubContext, machine: dict[str, Any], facts: dict[str, Any]
) -> None:
    """Inside the enrollment's write: the host's vars get the connection (its own win)."""
    row = db.execute("SELECT vars FROM hosts WHERE name = ?", [machine["name"]]).fetchone()
    stored = json.loads(row[0]) if row and row[0] else {}
    merged = {**connection_vars(ctx, machine, facts), **stored}
    db.execute("UPDATE hosts SET vars = ? WHERE name = ?",
               [json.dumps(merged, sort_keys=True), machine["name"]])  # fmt: skip


def agent_enrolled(
    db: sqlite_utils.Database, ctx: HubContext, host: str, token_id: str, actor: str,
    facts: dict[str, Any],
) -> bool:  # fmt: skip
    """Inside the enrollment's write: a provisioned machine whose first-boot token enrolled
    this agent becomes that host, reachable, and configuring (True: call `start` after)."""
    rows = list(db.query("SELECT * FROM machines WHERE name = ? AND state = ?",
                         [host, State.PROVISIONED.value]))  # fmt: skip
    if not rows or json.loads(rows[0]["image"] or "{}").get("enroll_token") != token_id:
        return False
    host_vars_in(db, ctx, rows[0], facts)
    machines.transition(db, ctx, host, Event.AGENT_ONLINE, actor, host=host)
    return True


def start(ctx: HubContext, name: str) -> None:
    """Run the configure playbook on the machine's host; a run that cannot start fails the
    step at once, with the reason."""
    req = runs.RunRequest(playbook=ctx.settings.metal_configure_playbook, limit=name)
    try:
        run = runs.start_run(ctx, req, ACTOR, on_finish=partial(_finished, ctx, name))
    except AiorchError as exc:
        reason = f"{req.playbook} could not start: {exc}"
        ctx.store.write(lambda db: _fail(db, ctx, name, reason))
        return
    log.info("machine %s: configuring with %s (run %s)", name, req.playbook, run["id"])


def _fail(db: sqlite_utils.Database, ctx: HubContext, name: str, reason: str) -> None:
    machines.transition(db, ctx, name, Event.FAIL, ACTOR, expect=State.CONFIGURING, reason=reason)


def _finished(ctx: HubContext, name: str, db: sqlite_utils.Database, run: dict[str, Any]) -> str:
    state = machines.row(db, name)["state"]
    if state != State.CONFIGURING:
        return f"machine {name} is {state} now: left as it is"
    gate = gpu_acceptance.summary(db, name)  # this run's record only: not a past life's
    if gate is not None and gate["run_id"] == run["id"] and not gate["accepted"]:
        why = "; ".join(gate["failures"]) or "not accepted"
        _fail(db, ctx, name, f"GPU acceptance failed (run {run['id']}): {why}")
        return f"machine {name} failed its GPU acceptance"
    if run["status"] == "successful":
        machines.transition(db, ctx, name, Event.CONFIGURED, ACTOR)
        return f"machine {name} is serving"
    _fail(db, ctx, name, f"{run['playbook']} run {run['id']} {run['status']}")
    return f"machine {name} failed configuring"
