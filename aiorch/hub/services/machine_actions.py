"""What an operator does to a machine: inspect it, accept it, release (wipe) it, power it.

Each action that needs the machine to boot the ramdisk first moves it into its waiting state
with a fresh one-use boot token (so the boot script it fetches finds it there), then tells the
BMC to boot from the network once and power on. A BMC that fails moves the machine straight to
that step's failed state with the BMC's words, and the caller gets the same one-line error.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Literal

import sqlite_utils

from aiorch.errors import AiorchError, Conflict, InvalidInput
from aiorch.hub.context import HubContext
from aiorch.hub.services import audit, machine_deploy, machines
from aiorch.metal.bmc import PowerAction
from aiorch.metal.lifecycle import Event, State

log = logging.getLogger("aiorch.hub.machines")
WipeMethod = Literal["metadata", "secure"]


def _network_boot(ctx: HubContext, name: str, event: Event, actor: str, **fields: Any) -> None:
    """Into the waiting state with a new boot token, then PXE once and power on (or cycle)."""
    token = secrets.token_urlsafe(32)
    sealed = ctx.sealer.seal(token, machines.token_binding(name))

    def enter(db: sqlite_utils.Database) -> State:
        return machines.transition(
            db, ctx, name, event, actor, boot_token=sealed,
            boot_token_hash=machines.token_hash(token), **fields,
        )  # fmt: skip

    entered = ctx.store.write(enter)
    try:
        controller = machines.connect(ctx, machines.row(ctx.store.read(), name))
        controller.set_boot_once("pxe")
        controller.power("cycle" if controller.power_state() == "on" else "on")
    except AiorchError as exc:
        reason = f"BMC: {exc}"

        def fail(db: sqlite_utils.Database) -> None:
            machines.transition(db, ctx, name, Event.FAIL, actor, expect=entered, reason=reason)

        ctx.store.write(fail)
        raise


def inspect(ctx: HubContext, name: str, actor: str) -> dict[str, Any]:
    """Boot the ramdisk: it posts the inventory, burns in, and the class judges it."""
    _network_boot(ctx, name, Event.INSPECT, actor)
    return machines.show(ctx, name)


def accept(ctx: HubContext, name: str, actor: str, force: bool = False) -> dict[str, Any]:
    """An accepted machine becomes ready; a quarantined one only with `force` (audited)."""
    machine = machines.row(ctx.store.read(), name)
    if machine["state"] == State.QUARANTINED and not force:
        raise Conflict(
            f"machine {name} is quarantined ({machine['reason']}); accept --force takes it anyway"
        )
    reason = f"accepted by {actor} despite: {machine['reason']}" if force else None

    def op(db: sqlite_utils.Database) -> None:
        machines.transition(db, ctx, name, Event.ACCEPT, actor,
                            expect=State(machine["state"]), reason=reason)  # fmt: skip

    ctx.store.write(op)
    return machines.show(ctx, name)


def release(ctx: HubContext, name: str, actor: str, wipe: WipeMethod) -> dict[str, Any]:
    """Wipe the machine's disks in the ramdisk (metadata by default) and make it ready again.
    A serving machine drains first (its host's workloads move off before anything is wiped)."""
    machine = machines.row(ctx.store.read(), name)
    if machine["state"] == State.SERVING:
        raise Conflict(f"machine {name} is serving: retire its host first (aiorch hosts retire)")
    _network_boot(ctx, name, Event.RELEASE, actor, wipe={"method": wipe, "requested_by": actor})
    return machines.show(ctx, name)


def provision(
    ctx: HubContext, name: str, image: str, actor: str, root_disk: str | None = None,
    site: str = "default",
) -> dict[str, Any]:  # fmt: skip
    """Write `image` onto the machine's disk in the ramdisk, with its first-boot seed; the
    machine then boots from that disk and its agent enrolls (a READY machine only)."""
    machine = machines.row(ctx.store.read(), name)
    if machine["state"] != State.READY:
        raise Conflict(f"machine {name} is {machine['state']}: only a ready machine is provisioned")
    record = machine_deploy.provision_record(ctx, machine, image, root_disk, site, actor)
    _network_boot(ctx, name, Event.PROVISION, actor, image=record)
    return machines.show(ctx, name)


def power(ctx: HubContext, name: str, action: PowerAction, actor: str) -> dict[str, Any]:
    machine = machines.row(ctx.store.read(), name)
    if machine["state"] == State.RETIRED:
        raise InvalidInput(f"machine {name} is retired")
    controller = machines.connect(ctx, machine)
    controller.power(action)

    def op(db: sqlite_utils.Database) -> None:
        audit.record(db, actor, f"machine.power.{action}", f"machine:{name}", ts=ctx.clock())

    ctx.store.write(op)
    return {
        "name": name,
        "power": controller.power_state(),
        "bmc": machine["bmc"],
        "boot_override": controller.boot_override(),
        "simulated": controller.simulated,
    }


def lifecycle(ctx: HubContext, name: str, event: Event, actor: str) -> dict[str, Any]:
    """The operator's plain moves: maintenance, back from it, retire."""

    def op(db: sqlite_utils.Database) -> None:
        machines.transition(db, ctx, name, event, actor)

    ctx.store.write(op)
    return machines.show(ctx, name)


# A machine whose host is retired may be released from these states (draining: at once, as
# `hosts retire` already moved its workloads off and revoked its agent).
_RELEASED_WITH_HOST = (State.SERVING, State.DRAINING, State.PROVISIONED, State.CONFIGURING,
                       State.FAILED_CONFIGURING, State.FAILED_PROVISIONING)  # fmt: skip


def release_retired(ctx: HubContext) -> str | None:
    """The release pass: `aiorch hosts retire` on a machine-backed host goes on through
    release, so a retired host's machine is drained, wiped (metadata) and ready again."""
    marks = ",".join("?" * len(_RELEASED_WITH_HOST))
    due = list(ctx.store.read().query(
        "SELECT m.name, m.state FROM machines m JOIN hosts h ON h.name = m.host "
        f"WHERE h.status = 'retired' AND m.state IN ({marks}) ORDER BY m.name",
        [s.value for s in _RELEASED_WITH_HOST],
    ))  # fmt: skip
    wipe = {"method": "metadata", "requested_by": "hub: its host was retired"}
    released = []
    for machine in due:
        name, state = machine["name"], State(machine["state"])
        try:
            if state is State.SERVING:

                def drain(db: sqlite_utils.Database, name: str = name) -> None:
                    machines.transition(db, ctx, name, Event.RELEASE, "hub",
                                        expect=State.SERVING, wipe=wipe)  # fmt: skip

                ctx.store.write(drain)
            event = Event.DRAINED if state in (State.SERVING, State.DRAINING) else Event.RELEASE
            _network_boot(ctx, name, event, "hub", wipe=wipe)
        except AiorchError as exc:
            log.warning("machine %s: its host is retired but it could not be released: %s",
                        name, exc)  # fmt: skip
            continue
        released.append(name)
    return f"released (host retired): {', '.join(released)}" if released else None
