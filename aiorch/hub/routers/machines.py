"""Machines: enroll them by BMC and MAC, inspect, accept, release and power them; the
hardware classes that judge them. Global admins act; fleet viewers read."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from aiorch.hub.context import HubContext
from aiorch.hub.routers.deps import allow, context
from aiorch.hub.services import machine_actions, machines
from aiorch.hub.services.auth import Principal
from aiorch.metal.lifecycle import Event
from aiorch.metal.profile import DEFAULT_CLASS, HardwareClass

router = APIRouter(tags=["machines"])


class MachineEnroll(BaseModel):
    name: str = Field(max_length=63)
    bmc: str = Field(max_length=2048)
    mac: str = Field(max_length=64)
    username: str = Field("", max_length=256)
    password: str = Field("", max_length=1024)
    hardware_class: str = Field(DEFAULT_CLASS, max_length=63)


class MachineInfo(BaseModel):
    name: str
    state: str
    state_since: float
    deadline: float | None
    reason: str | None
    bmc: str
    mac: str
    hardware_class: str
    simulated: str | None
    host: str | None
    inventory: dict[str, Any] | None
    burn_in: dict[str, Any] | None
    wipe: dict[str, Any] | None
    image: dict[str, Any] | None
    created_by: str
    created_at: float
    updated_at: float


class MachineEvent(BaseModel):
    ts: float
    event: str
    from_state: str
    to_state: str
    reason: str | None
    actor: str


class MachineDetail(MachineInfo):
    events: list[MachineEvent]


class Accept(BaseModel):
    force: bool = False


class Release(BaseModel):
    wipe: Literal["metadata", "secure"] = "metadata"


class Provision(BaseModel):
    image: str = Field(max_length=64)
    root_disk: str | None = Field(None, max_length=32)
    site: str = Field("default", max_length=63)


class Power(BaseModel):
    action: Literal["on", "off", "cycle"]


class PowerInfo(BaseModel):
    name: str
    power: str
    bmc: str
    boot_override: dict[str, str]
    simulated: str | None


class ClassInfo(BaseModel):
    name: str
    profile: HardwareClass


_READ, _MANAGE = allow("machine.read"), allow("machine.manage")
Moves = Literal["maintenance", "exit-maintenance", "retire"]


@router.post("/machines", status_code=201, response_model=MachineDetail)
def enroll(body: MachineEnroll, ctx: HubContext = Depends(context),
           p: Principal = Depends(_MANAGE)) -> dict:  # fmt: skip
    """Enroll a machine; its BMC must answer with these credentials (sealed, never shown)."""
    return machines.enroll(ctx, body.name, body.bmc, body.mac, body.username, body.password,
                           body.hardware_class, p.actor)  # fmt: skip


@router.get("/machines", response_model=list[MachineInfo])
def list_machines(state: str | None = None, ctx: HubContext = Depends(context),
                  _: Principal = Depends(_READ)) -> list[dict]:  # fmt: skip
    return machines.list_machines(ctx, state)


@router.get("/machines/{name}", response_model=MachineDetail)
def show(name: str, ctx: HubContext = Depends(context), _: Principal = Depends(_READ)) -> dict:
    return machines.show(ctx, name)


@router.post("/machines/{name}/inspect", response_model=MachineDetail)
def inspect(name: str, ctx: HubContext = Depends(context),
            p: Principal = Depends(_MANAGE)) -> dict:  # fmt: skip
    """Network-boot the ramdisk: inventory, then the class's burn-in."""
    return machine_actions.inspect(ctx, name, p.actor)


@router.post("/machines/{name}/accept", response_model=MachineDetail)
def accept(name: str, body: Accept, ctx: HubContext = Depends(context),
           p: Principal = Depends(_MANAGE)) -> dict:  # fmt: skip
    return machine_actions.accept(ctx, name, p.actor, body.force)


@router.post("/machines/{name}/release", response_model=MachineDetail)
def release(name: str, body: Release, ctx: HubContext = Depends(context),
            p: Principal = Depends(_MANAGE)) -> dict:  # fmt: skip
    """Wipe the disks in the ramdisk and make the machine ready again."""
    return machine_actions.release(ctx, name, p.actor, body.wipe)


@router.post("/machines/{name}/provision", response_model=MachineDetail)
def provision(name: str, body: Provision, ctx: HubContext = Depends(context),
              p: Principal = Depends(_MANAGE)) -> dict:  # fmt: skip
    """Write a root image in the ramdisk, boot it from the disk; its agent enrolls."""
    return machine_actions.provision(ctx, name, body.image, p.actor, body.root_disk, body.site)


@router.post("/machines/{name}/power", response_model=PowerInfo)
def power(name: str, body: Power, ctx: HubContext = Depends(context),
          p: Principal = Depends(_MANAGE)) -> dict:  # fmt: skip
    return machine_actions.power(ctx, name, body.action, p.actor)


@router.post("/machines/{name}/{move}", response_model=MachineDetail)
def move(name: str, move: Moves, ctx: HubContext = Depends(context),
         p: Principal = Depends(_MANAGE)) -> dict:  # fmt: skip
    """maintenance, exit-maintenance (back to enrolled, to be inspected again), retire."""
    return machine_actions.lifecycle(ctx, name, Event(move.replace("-", "_")), p.actor)


@router.get("/machine-classes", response_model=list[ClassInfo])
def list_classes(ctx: HubContext = Depends(context), _: Principal = Depends(_READ)) -> list:
    return machines.list_classes(ctx)


@router.put("/machine-classes/{name}", response_model=ClassInfo)
def set_class(name: str, body: HardwareClass, ctx: HubContext = Depends(context),
              p: Principal = Depends(_MANAGE)) -> dict:  # fmt: skip
    """Create or replace a hardware class: its step timeouts and burn-in floors."""
    return machines.set_class(ctx, name, body, p.actor)
