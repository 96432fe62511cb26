"""Power control through a machine's own agent, for boxes with no BMC (the "agent://HOST"
driver): the hub puts a request under "power" in the agent's desired state, the agent sets the
firmware's next boot (`efibootmgr --bootnext`) and reboots or powers off, and its report
carries the outcome under "power" (after the reboot, since the request is acted on once).

Both sides import this module; standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, cast

from edge_agent.contract.fields import ContractError, mapping, number, text

Action = Literal["reboot", "poweroff"]
BootNext = Literal["pxe", "disk"]
ACTIONS: tuple[Action, ...] = ("reboot", "poweroff")
BOOT_NEXT: tuple[BootNext, ...] = ("pxe", "disk")
ID_RE = re.compile(r"^[0-9a-f]{16}\Z")
MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}\Z")
MAX_MESSAGE = 500


@dataclass(frozen=True)
class PowerRequest:
    id: str  # new for each request: the agent acts on an id once, across reboots
    action: Action
    boot_next: BootNext | None = None  # None: the firmware's own boot order
    mac: str | None = None  # the NIC to network-boot from, when boot_next is "pxe"


@dataclass(frozen=True)
class PowerOutcome:
    id: str  # the request's
    ok: bool
    message: str  # what the agent did, or why it could not
    at: float  # the agent's clock, Unix seconds


def power_entry(request: PowerRequest) -> dict[str, Any]:
    """The request as the desired state's "power" value; `parse_power` reads it back."""
    entry: dict[str, Any] = {"id": request.id, "action": request.action}
    if request.boot_next is not None:
        entry["boot_next"] = request.boot_next
    if request.mac is not None:
        entry["mac"] = request.mac
    return entry


def parse_power(document: dict[str, Any]) -> PowerRequest | None:
    """The desired state's power request, or None when it has none."""
    raw = document.get("power")
    if raw is None:
        return None
    raw = mapping(raw, "power")
    action = raw.get("action")
    if action not in ACTIONS:
        raise ContractError("power.action", f"must be one of {', '.join(ACTIONS)}, got {action!r}")
    boot_next = raw.get("boot_next")
    if boot_next is not None and boot_next not in BOOT_NEXT:
        raise ContractError("power.boot_next", f"must be pxe or disk, got {boot_next!r}")
    mac = raw.get("mac")
    if mac is not None and (not isinstance(mac, str) or not MAC_RE.match(mac)):
        raise ContractError("power.mac", f"must be a lower-case MAC, got {mac!r}")
    return PowerRequest(
        _id(raw, "power.id"), cast(Action, action), cast("BootNext | None", boot_next), mac
    )


def outcome_entry(outcome: PowerOutcome) -> dict[str, Any]:
    return {"id": outcome.id, "ok": outcome.ok, "message": outcome.message, "at": outcome.at}


def parse_outcome(raw: Any) -> PowerOutcome:
    """An agent's reported outcome (the hub reads it; the agent reads back its own file)."""
    raw = mapping(raw, "power")
    ok = raw.get("ok")
    if not isinstance(ok, bool):
        raise ContractError("power.ok", f"must be true or false, got {ok!r}")
    return PowerOutcome(
        id=_id(raw, "power.id"),
        ok=ok,
        message=text(raw.get("message"), "power.message", MAX_MESSAGE),
        at=number(raw.get("at"), "power.at"),
    )


def _id(raw: dict[str, Any], where: str) -> str:
    value = text(raw.get("id"), where)
    if not ID_RE.match(value):
        raise ContractError(where, f"must be 16 lower-case hex digits, got {value!r}")
    return value
