"""Power for machines with no BMC (the "agent://HOST" driver): a request goes out in HOST's
desired state (edge_agent.contract.power), its agent sets the next boot and reboots or powers
off, and the outcome it reports comes back here. The request leaves the desired state once
answered, so a later agent on the same host (a re-imaged disk) never repeats it."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import sqlite_utils

from aiorch.errors import InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import agents, audit, machines, replicas
from aiorch.metal.bmc import BootDevice, PowerState
from aiorch.metal.bmc.base import AgentAction
from aiorch.metal.lifecycle import WAITING, Event, State
from edge_agent.contract.fields import ContractError
from edge_agent.contract.power import PowerRequest, outcome_entry, parse_outcome, power_entry

log = logging.getLogger("aiorch.hub.power")

_UPSERT_BOOT = (
    "INSERT INTO power_requests (host, boot_next) VALUES (?, ?) "
    "ON CONFLICT (host) DO UPDATE SET boot_next = excluded.boot_next"
)
_UPSERT_REQUEST = (
    "INSERT INTO power_requests (host, boot_next, request, requested_at) VALUES (?, NULL, ?, ?) "
    "ON CONFLICT (host) DO UPDATE SET boot_next = NULL, request = excluded.request, "
    "requested_at = excluded.requested_at"
)


def _row(db: sqlite_utils.Database, host: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM power_requests WHERE host = ?", [host]))
    return rows[0] if rows else {}


def pending(db: sqlite_utils.Database, host: str) -> dict[str, Any] | None:
    """The request HOST's agent has yet to answer, as its desired state carries it."""
    request = _row(db, host).get("request")
    return json.loads(request) if request else None


class AgentPowerChannel:
    """The bmc.PowerChannel the hub gives the agent:// driver; `mac` is the machine's boot
    NIC, which the agent picks the network boot entry by."""

    def __init__(self, ctx: HubContext, mac: str | None) -> None:
        self.ctx = ctx
        self.mac = mac

    def power_state(self, host: str) -> PowerState:
        db = self.ctx.store.read()
        found = db.execute(
            "SELECT h.agent_id, a.last_seen, a.revoked_at FROM hosts h "
            "LEFT JOIN agents a ON a.id = h.agent_id WHERE h.name = ?",
            [host],
        ).fetchone()
        if found is None:
            raise InvalidInput(f"agent://{host}: there is no host {host} in the inventory")
        if not found[0]:
            raise InvalidInput(f"agent://{host}: host {host} has no enrolled agent")
        if agents.host_agent_status(self.ctx, *found) == "online":
            return "on"
        last = _row(db, host).get("outcome")
        done = json.loads(last) if last else {}
        return "off" if done.get("ok") and "poweroff" in done.get("message", "") else "unknown"

    def request(self, host: str, action: AgentAction) -> None:
        def op(db: sqlite_utils.Database) -> None:
            boot_next = _row(db, host).get("boot_next") if action == "reboot" else None
            mac = self.mac if boot_next == "pxe" else None
            request = PowerRequest(secrets.token_hex(8), action, boot_next, mac)
            entry = json.dumps(power_entry(request), sort_keys=True)
            db.execute(_UPSERT_REQUEST, [host, entry, self.ctx.clock()])
            replicas.publish(self.ctx, db, {host}, "hub")

        self.ctx.store.write(op)

    def set_boot_next(self, host: str, device: BootDevice) -> None:
        self.ctx.store.write(lambda db: db.execute(_UPSERT_BOOT, [host, device]))

    def boot_next(self, host: str) -> BootDevice | None:
        value = _row(self.ctx.store.read(), host).get("boot_next")
        return value if value in ("pxe", "disk") else None


async def ingest(ctx: HubContext, agent_id: str, raw: Any) -> None:
    """An agent's reported outcome: the answered request leaves its desired state, and a
    failure fails the machine waiting on it at once (with the agent's reason) rather than at
    its deadline. Check-ins stay cheap: nothing is written unless the answer is new."""
    try:
        outcome = parse_outcome(raw)
    except ContractError as exc:
        log.warning("agent %s: power outcome refused: %s", agent_id, exc)
        return
    db = ctx.store.read()
    host = db.execute("SELECT name FROM hosts WHERE agent_id = ?", [agent_id]).fetchone()
    if host is None or (pending(db, host[0]) or {}).get("id") != outcome.id:
        return
    name = host[0]

    def op(db: sqlite_utils.Database) -> None:
        if (pending(db, name) or {}).get("id") != outcome.id:
            return  # answered meanwhile
        db.execute(
            "UPDATE power_requests SET request = NULL, outcome = ?, outcome_at = ? WHERE host = ?",
            [json.dumps(outcome_entry(outcome), sort_keys=True), ctx.clock(), name],
        )
        audit.record(db, f"agent:{agent_id}", "agent.power.done", f"host:{name}",
                     {"ok": outcome.ok, "message": outcome.message}, ts=ctx.clock())  # fmt: skip
        replicas.publish(ctx, db, {name}, "hub")
        if not outcome.ok:
            _fail_waiting(db, ctx, name, outcome.message)

    await ctx.store.awrite(op)


def _fail_waiting(db: sqlite_utils.Database, ctx: HubContext, host: str, message: str) -> None:
    for (machine,) in db.execute(
        "SELECT name FROM machines WHERE bmc = ?", [f"agent://{host}"]
    ).fetchall():
        if State(machines.row(db, machine)["state"]) in WAITING:
            machines.transition(db, ctx, machine, Event.FAIL, "hub", reason=f"agent: {message}")
