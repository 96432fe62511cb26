"""The hub's side of the ramdisk loop (aiorch/metal/contract.py): a machine's ramdisk posts
its inventory and each action's result, and is told what to do next from its state.

The ramdisk proves who it is with the boot token of the machine's current step; the token
dies when the step ends, and a ramdisk booted on another machine's token is refused by its
MAC. What the ramdisk measured is stored in the same write as the state it leads to.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from aiorch.errors import Forbidden, Unauthorized
from aiorch.hub.context import HubContext
from aiorch.hub.services import machine_deploy, machines
from aiorch.metal import bmc
from aiorch.metal.contract import POWEROFF, REBOOT, Action, ActionResult, Inventory, WipeParams
from aiorch.metal.lifecycle import Event, State
from aiorch.metal.profile import verdict


def machine_for(ctx: HubContext, authorization: str | None) -> dict[str, Any]:
    """The machine whose live boot token this bearer header carries."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("a ramdisk request needs its machine's boot token")
    rows = list(
        ctx.store.read().query(
            "SELECT * FROM machines WHERE boot_token_hash = ?", [machines.token_hash(token)]
        )
    )
    if not rows:
        raise Unauthorized("this boot token is not (or no longer) valid for any machine")
    return rows[0]


def _next_for(ctx: HubContext, db: sqlite_utils.Database, name: str, pin: str) -> Action:
    """What a ramdisk freshly booted on this machine does in its current state."""
    machine = machines.row(db, name)
    state = State(machine["state"])
    if state is State.BURNING_IN:
        cls = machines.hardware_class(db, machine["hardware_class"])
        return Action(kind="burn_in", params=cls.burn_in_params().model_dump())
    if state is State.RELEASING:
        method = (machines.decode_wipe(machine) or {}).get("method", "metadata")
        return Action(kind="wipe", params=WipeParams(method=method).model_dump())
    if state is State.PROVISIONING:
        return machine_deploy.deploy_action(ctx, db, machine, pin)
    return _done(machine)


def _done(machine: dict[str, Any]) -> Action:
    """The ramdisk's last step: power off, or, where no BMC can power the machine on again,
    reboot into the OS on its disk, whose agent is then the way in."""
    return REBOOT if bmc.parse_bmc(machine["bmc"]).scheme == "agent" else POWEROFF


def inventory(ctx: HubContext, machine: dict[str, Any], body: Inventory) -> Action:
    name = machine["name"]
    if body.boot_mac != machine["mac"]:
        raise Forbidden(f"this boot token belongs to machine {name}, not to MAC {body.boot_mac}")
    record = body.model_dump(by_alias=True)
    pin = ctx.authority.token_pin  # for a deploy's first-boot token (opening the CA writes)

    def op(db: sqlite_utils.Database) -> Action:
        state = State(machines.row(db, name)["state"])
        if state is State.INSPECTING:
            machines.transition(db, ctx, name, Event.INVENTORY, "ramdisk", inventory=record)
            machines.transition(db, ctx, name, Event.BURN_IN, "hub")
        elif state is not State.INSPECTED:
            db.table("machines").update(name, {"inventory": machines.dumps(record)})
        return _next_for(ctx, db, name, pin)

    return ctx.store.write(op)


def result(ctx: HubContext, machine: dict[str, Any], body: ActionResult) -> Action:
    name = machine["name"]
    pin = ctx.authority.token_pin

    def op(db: sqlite_utils.Database) -> Action:
        machine = machines.row(db, name)
        state = State(machine["state"])
        if body.kind == "burn_in" and state is State.BURNING_IN:
            cls = machines.hardware_class(db, machine["hardware_class"])
            known = machine["inventory"]
            problems = verdict(cls, Inventory.model_validate_json(known) if known else None, body)
            record = {"ok": not problems, "measured": body.measured, "problems": problems,
                      "detail": body.detail, "profile": cls.burn_in.model_dump()}  # fmt: skip
            event = Event.FAILED_PROFILE if problems else Event.PASSED
            reason = "; ".join(problems) if problems else None
            machines.transition(db, ctx, name, event, "ramdisk", reason=reason, burn_in=record)
            return _done(machine)
        if body.kind == "wipe" and state is State.RELEASING:
            disks = [d.model_dump() for d in body.disks]
            wipe = {**(machines.decode_wipe(machine) or {}), "ok": body.ok,
                    "detail": body.detail, "disks": disks}  # fmt: skip
            if body.ok and all(d.ok for d in body.disks):
                machines.transition(db, ctx, name, Event.WIPED, "ramdisk", wipe=wipe)
            else:
                reason = f"wipe failed: {body.detail or 'a disk did not wipe'}"
                machines.transition(db, ctx, name, Event.FAIL, "ramdisk", reason=reason, wipe=wipe)
            return POWEROFF
        if body.kind == "deploy" and state is State.PROVISIONING:
            return machine_deploy.deployed(ctx, db, name, body)
        return _next_for(ctx, db, name, pin)

    return ctx.store.write(op)
