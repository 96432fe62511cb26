"""Machine records: enrollment, the lifecycle transitions (each stored, with its history and an
audit entry, in the same write), hardware classes, and the deadline pass.

BMC I/O never runs on the writer: callers read, talk to the BMC, then write, and every write
re-checks the state it read (a machine moved meanwhile is a Conflict, not a lost update).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

import sqlite_utils

from aiorch.errors import AiorchError, Conflict, InvalidInput, NotFound
from aiorch.hub.context import HubContext, decode_json_fields
from aiorch.hub.sealing import Binding
from aiorch.hub.services import agent_power, audit
from aiorch.metal import bmc
from aiorch.metal.contract import normal_mac
from aiorch.metal.lifecycle import FAILED_TWIN, WAITING, Event, State, next_state
from aiorch.metal.profile import DEFAULT_CLASS, HardwareClass

log = logging.getLogger("aiorch.hub.machines")
NAME_RE = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?\Z")
JSON_FIELDS = ("inventory", "burn_in", "wipe", "image")
HIDDEN = ("bmc_credentials", "boot_token", "boot_token_hash")


def credentials_binding(name: str) -> Binding:
    return ("machine", name, "bmc_credentials")


def token_binding(name: str) -> Binding:
    return ("machine", name, "boot_token")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def decode_wipe(machine: dict[str, Any]) -> dict[str, Any] | None:
    """The wipe asked for (method, by whom) and, once done, its per-disk outcome."""
    return json.loads(machine["wipe"]) if machine["wipe"] else None


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"invalid machine name {name!r}: use lowercase letters, digits and '-' (a DNS label)"
        )
    return name


def hardware_class(db: sqlite_utils.Database, name: str) -> HardwareClass:
    row = db.execute("SELECT profile FROM machine_classes WHERE name = ?", [name]).fetchone()
    if row is None:
        if name == DEFAULT_CLASS:
            return HardwareClass()
        raise NotFound(f"no hardware class named {name} (aiorch machines class-set {name} -f FILE)")
    return HardwareClass.model_validate_json(row[0])


def set_class(ctx: HubContext, name: str, profile: HardwareClass, actor: str) -> dict[str, Any]:
    check_name(name)
    now, text = ctx.clock(), profile.model_dump_json()

    def op(db: sqlite_utils.Database) -> None:
        db.execute(
            "INSERT INTO machine_classes (name, profile, updated_by, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET profile = excluded.profile, "
            "updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            [name, text, actor, now],
        )
        audit.record(db, actor, "machine.class.set", f"machine-class:{name}", ts=now)

    ctx.store.write(op)
    return {"name": name, "profile": profile.model_dump()}


def list_classes(ctx: HubContext) -> list[dict[str, Any]]:
    stored = ctx.store.read().query("SELECT name, profile FROM machine_classes")
    rows = {r["name"]: r["profile"] for r in stored}
    rows.setdefault(DEFAULT_CLASS, HardwareClass().model_dump_json())
    return [{"name": n, "profile": json.loads(rows[n])} for n in sorted(rows)]


def row(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM machines WHERE name = ?", [name]))
    if not rows:
        raise NotFound(f"no machine named {name}")
    return rows[0]


def public(machine: dict[str, Any]) -> dict[str, Any]:
    """A record as the API shows it: JSON fields decoded, credentials and tokens left out."""
    out = decode_json_fields(machine, JSON_FIELDS)
    for field in HIDDEN:
        out.pop(field, None)
    return out


def list_machines(ctx: HubContext, state: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE state = ?", [state]) if state else ("", [])
    rows = ctx.store.read().query(f"SELECT * FROM machines {where} ORDER BY name", params)
    return [public(r) for r in rows]


def show(ctx: HubContext, name: str) -> dict[str, Any]:
    db = ctx.store.read()
    out = public(row(db, name))
    out["events"] = list(
        db.query(
            "SELECT ts, event, from_state, to_state, reason, actor FROM machine_events "
            "WHERE machine = ? ORDER BY id",
            [name],
        )
    )
    return out


def connect(ctx: HubContext, machine: dict[str, Any]) -> bmc.Bmc:
    """The machine's BMC, logged in with its sealed credentials (opened only here)."""
    sealed = ctx.sealer.unseal(machine["bmc_credentials"], credentials_binding(machine["name"]))
    creds = json.loads(sealed)
    channel = agent_power.AgentPowerChannel(ctx, machine["mac"])
    return bmc.connect(
        bmc.parse_bmc(machine["bmc"]), creds["username"], creds["password"], channel=channel
    )


def enroll(
    ctx: HubContext,
    name: str,
    bmc_text: str,
    mac_text: str,
    username: str,
    password: str,
    hardware_class_name: str,
    actor: str,
) -> dict[str, Any]:
    """A new machine in `enrolled`, once its BMC answered with these credentials."""
    check_name(name)
    address = bmc.parse_bmc(bmc_text)
    try:
        mac = normal_mac(mac_text)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    hardware_class(ctx.store.read(), hardware_class_name)
    controller = bmc.connect(
        address, username, password, channel=agent_power.AgentPowerChannel(ctx, mac)
    )
    controller.power_state()  # an unreachable BMC or a wrong password fails here, one line
    now = ctx.clock()
    sealed = ctx.sealer.seal(
        json.dumps({"username": username, "password": password}), credentials_binding(name)
    )

    def op(db: sqlite_utils.Database) -> None:
        clash = db.execute(
            "SELECT name, mac FROM machines WHERE name = ? OR mac = ?", [name, mac]
        ).fetchone()
        if clash is not None:
            what = f"machine {name} already exists" if clash[0] == name else (
                f"MAC {mac} already belongs to machine {clash[0]}")  # fmt: skip
            raise Conflict(what)
        db.table("machines").insert(
            {
                "name": name,
                "bmc": address.display(),
                "bmc_credentials": sealed,
                "mac": mac,
                "hardware_class": hardware_class_name,
                "state": State.ENROLLED.value,
                "state_since": now,
                "simulated": controller.simulated,
                "created_by": actor,
                "created_at": now,
                "updated_at": now,
            }
        )
        _event(db, name, "enroll", "", State.ENROLLED, None, actor, now)
        audit.record(db, actor, "machine.enroll", f"machine:{name}",
                     {"bmc": address.display(), "mac": mac}, ts=now)  # fmt: skip

    ctx.store.write(op)
    return show(ctx, name)


def _event(
    db: sqlite_utils.Database,
    name: str,
    event: str,
    source: str,
    target: State,
    reason: str | None,
    actor: str,
    now: float,
) -> None:
    db.execute(
        "INSERT INTO machine_events (machine, ts, event, from_state, to_state, reason, actor) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [name, now, event, source, target.value, reason, actor],
    )


def transition(
    db: sqlite_utils.Database,
    ctx: HubContext,
    name: str,
    event: Event,
    actor: str,
    *,
    expect: State | None = None,
    reason: str | None = None,
    **fields: Any,
) -> State:
    """Move machine `name` by `event` inside the caller's write: the new state, its deadline
    (waiting states: now + the class's timeout), history, audit and any `fields` together. A
    machine no longer in `expect` is a Conflict. Leaving the waiting states drops the boot
    token, so a ramdisk's token works for one step only."""
    machine, now = row(db, name), ctx.clock()
    source = State(machine["state"])
    if expect is not None and source is not expect:
        raise Conflict(f"machine {name} is {source.value} now, not {expect.value}")
    target = next_state(source, event)
    deadline = None
    if target in WAITING:
        deadline = now + hardware_class(db, machine["hardware_class"]).timeouts.for_state(target)
    changes: dict[str, Any] = {"state": target.value, "state_since": now, "deadline": deadline,
                               "updated_at": now, **fields}  # fmt: skip
    if target not in WAITING:
        changes.update(boot_token=None, boot_token_hash=None)
    if target in WAITING or target is State.READY:
        changes.setdefault("reason", None)
    if reason is not None:
        changes["reason"] = reason
    for key, value in list(changes.items()):
        if key in JSON_FIELDS and value is not None and not isinstance(value, str):
            changes[key] = dumps(value)
    db.table("machines").update(name, changes)
    _event(db, name, event.value, source.value, target, reason, actor, now)
    detail = {"from": source.value, "to": target.value, **({"reason": reason} if reason else {})}
    audit.record(db, actor, f"machine.{event.value}", f"machine:{name}", detail, ts=now)
    return target


def expire_deadlines(ctx: HubContext) -> str | None:
    """The deadline pass: a machine past its waiting state's timeout moves to that step's
    failed state with the reason, and is powered off (so it stops PXE-looping)."""
    now = ctx.clock()
    due = list(
        ctx.store.read().query(
            "SELECT name, state, state_since FROM machines WHERE deadline IS NOT NULL "
            "AND deadline < ?",
            [now],
        )
    )
    failed = []
    for machine in due:
        state = State(machine["state"])
        reason = (
            f"timed out in {state.value} after {now - machine['state_since']:.0f} s "
            f"(the hardware class allows {FAILED_TWIN[state].value.removeprefix('failed_')} "
            "this long): the machine never reported back"
        )

        def op(
            db: sqlite_utils.Database, name: str = machine["name"], was: State = state,
            why: str = reason,
        ) -> None:  # fmt: skip
            transition(db, ctx, name, Event.TIMEOUT, "hub", expect=was, reason=why)

        try:
            ctx.store.write(op)
        except Conflict:
            continue  # it moved on while we looked
        failed.append(machine["name"])
        power_off_quietly(ctx, machine["name"])
    return f"timed out: {', '.join(failed)}" if failed else None


def power_off_quietly(ctx: HubContext, name: str) -> None:
    """Best effort: a failed machine is powered off; a BMC that does not answer is logged."""
    try:
        connect(ctx, row(ctx.store.read(), name)).power("off")
    except AiorchError as exc:
        log.warning("machine %s: could not power it off: %s", name, exc)
