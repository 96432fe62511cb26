"""What the aiorch ramdisk and the hub say to each other: the one home of that contract.

The ramdisk is a shell script (it runs before any OS, with busybox and a few tools), so the
JSON it writes is checked here, once, on the hub's side: `tests/test_metal_contract.py`
validates every example under `examples/metal/` against these models, and the ramdisk's own
output in the lab test goes through the same models.

The loop: the ramdisk POSTs its inventory, the hub answers with an Action; the ramdisk does
it and POSTs an ActionResult, which the hub answers with the next Action, until one says
`poweroff` or `reboot`. Every request carries the machine's one-use boot token as a bearer
token (`aiorch.token=` on the kernel command line) and goes over TLS to the hub, verified
against the CA the hub baked into the ramdisk.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# `$` here is the end of the text: pydantic checks patterns with Rust's regex (no "\Z" there),
# and normal_mac strips the text before its match.
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
NVIDIA_VENDOR = "0x10de"
# PCI classes of a GPU: VGA controller (0x0300) and 3D controller (0x0302, the datacentre parts).
GPU_CLASSES = ("0x0300", "0x0302")

ActionKind = Literal["burn_in", "wipe", "deploy", "wait", "poweroff", "reboot"]
Mac = Annotated[str, Field(pattern=MAC_RE.pattern)]


def normal_mac(text: str) -> str:
    """'AA-BB-cc:dd:ee:ff' -> 'aa:bb:cc:dd:ee:ff'; ValueError if it is not a MAC."""
    mac = text.strip().lower().replace("-", ":")
    if not MAC_RE.match(mac):
        raise ValueError(f"not a MAC address: {text!r} (want six hex pairs, aa:bb:cc:dd:ee:ff)")
    return mac


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class SystemId(_Model):
    """DMI type 1, as /sys/class/dmi/id gives it (empty strings become None)."""

    manufacturer: str | None = None
    product: str | None = None
    serial: str | None = None
    uuid: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return value.strip() or None if isinstance(value, str) else value


class Disk(_Model):
    name: str  # kernel name: vda, nvme0n1, sda
    size_bytes: int = Field(ge=0)
    serial: str | None = None
    model: str | None = None
    rotational: bool | None = None


class Nic(_Model):
    name: str
    mac: Mac


class PciDevice(_Model):
    address: str  # 0000:00:04.0
    vendor: str  # 0x10de
    device: str  # 0x2330
    pci_class: str = Field(alias="class")  # 0x030200 (class, subclass, prog-if)

    @property
    def is_gpu(self) -> bool:
        return self.vendor == NVIDIA_VENDOR and self.pci_class[:6] in GPU_CLASSES


class Inventory(_Model):
    """What the ramdisk found: the machine's birth record before any OS is written."""

    boot_mac: Mac
    system: SystemId
    cpus: int = Field(ge=1)
    cpu_model: str | None = None
    memory_bytes: int = Field(ge=0)
    disks: list[Disk] = Field(max_length=256)
    nics: list[Nic] = Field(max_length=256)
    pci: list[PciDevice] = Field(max_length=4096)

    def gpus(self) -> list[PciDevice]:
        return [device for device in self.pci if device.is_gpu]


class BurnInParams(_Model):
    cpu_seconds: int = Field(ge=1)
    disk_seconds: int = Field(ge=1)
    disk_size_mib: int = Field(ge=1)


class WipeParams(_Model):
    method: Literal["metadata", "secure"] = "metadata"


SEED_PATH_RE = re.compile(r"^(/[A-Za-z0-9_.-]+)+$")


class SeedFile(_Model):
    """A file the ramdisk writes onto the new root after the image: the first boot's
    enrollment token, the agent's configuration, the operator's SSH keys, the host name."""

    path: str = Field(pattern=SEED_PATH_RE.pattern, max_length=256)
    content: str = Field(max_length=65536)
    mode: Literal["0600", "0644"] = "0600"

    @field_validator("path")
    @classmethod
    def _inside_the_root(cls, value: str) -> str:
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError(f"seed path {value!r} must not climb out of the new root")
        return value


class DeployParams(_Model):
    """Write the image onto `root_disk`: stream it from `image_url` (the hub, over TLS, with
    the boot token), check the gzip stream's sha256 while it is written, then write the seed
    onto partition `root_partition` of the written disk."""

    image_url: str = Field(pattern=r"^https://\S+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    root_disk: str = Field(pattern=r"^[a-z][a-z0-9]{1,31}$")  # kernel name: vda, nvme0n1, sda
    root_partition: int = Field(1, ge=1, le=128)
    seed: list[SeedFile] = Field(default_factory=list, max_length=64)


class Action(_Model):
    """The hub's answer: what the ramdisk does next. `params` by kind: BurnInParams,
    WipeParams, DeployParams, or {"seconds": N} for wait."""

    kind: ActionKind
    params: dict[str, Any] = Field(default_factory=dict)


class DiskOutcome(_Model):
    name: str
    serial: str | None = None
    method: str
    ok: bool
    detail: str = ""


class ActionResult(_Model):
    """What the ramdisk did with the last Action: `measured` holds burn-in figures
    (cpu_bogo_ops_per_s, disk_write_mib_s, disk_read_mib_s, smart: PASSED|FAILED|unsupported
    per disk), `disks` a wipe's per-disk outcome."""

    kind: ActionKind
    ok: bool
    detail: str = Field("", max_length=4096)
    measured: dict[str, Any] = Field(default_factory=dict)
    disks: list[DiskOutcome] = Field(default_factory=list, max_length=256)


# The answers that end a ramdisk's loop, shared by each step's handler on the hub.
POWEROFF = Action(kind="poweroff")
REBOOT = Action(kind="reboot")
