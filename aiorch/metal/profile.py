"""Hardware classes: what a kind of server must measure to be accepted, and how long each of
its steps may take (a GPU server's firmware POSTs for minutes; a lab VM boots in seconds).

A machine names its class at enrollment; the `default` class exists always. The burn-in
verdict is here, pure, so the reasons a machine is quarantined are the numbers it measured
against the numbers it was asked for.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from aiorch.metal.contract import ActionResult, BurnInParams, Inventory
from aiorch.metal.lifecycle import State

DEFAULT_CLASS = "default"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    """Seconds each waiting state may last (MAAS: 30 min a step; Ironic: 1800 s a callback)."""

    inspecting: float = Field(1800, gt=0)
    burning_in: float = Field(7200, gt=0)
    provisioning: float = Field(3600, gt=0)
    configuring: float = Field(3600, gt=0)
    releasing: float = Field(1800, gt=0)

    def for_state(self, state: State) -> float:
        step = {
            State.INSPECTED: "inspecting",
            State.PROVISIONED: "provisioning",
            State.DRAINING: "releasing",
        }.get(state, state.value)
        return float(getattr(self, step))


class BurnIn(_Strict):
    """How long to test, and the floor each figure must reach (None: not judged)."""

    cpu_seconds: int = Field(60, ge=1, le=86400)
    disk_seconds: int = Field(30, ge=1, le=86400)
    disk_size_mib: int = Field(256, ge=1, le=1 << 20)
    min_cpus: int | None = Field(None, ge=1)
    min_memory_gib: float | None = Field(None, ge=0)
    min_disks: int | None = Field(None, ge=0)
    expect_gpus: int | None = Field(None, ge=0)
    min_cpu_bogo_ops_per_s: float | None = Field(None, ge=0)
    min_disk_write_mib_s: float | None = Field(None, ge=0)
    min_disk_read_mib_s: float | None = Field(None, ge=0)
    require_smart_pass: bool = True  # a disk whose SMART health says FAILED quarantines


class HardwareClass(_Strict):
    timeouts: Timeouts = Field(default_factory=Timeouts)
    burn_in: BurnIn = Field(default_factory=BurnIn)

    def burn_in_params(self) -> BurnInParams:
        b = self.burn_in
        return BurnInParams(
            cpu_seconds=b.cpu_seconds, disk_seconds=b.disk_seconds, disk_size_mib=b.disk_size_mib
        )


def _below(name: str, measured: float | None, floor: float | None, unit: str) -> list[str]:
    if floor is None:
        return []
    if measured is None:
        return [f"{name}: not measured (want at least {floor:g}{unit})"]
    if measured >= floor:
        return []
    return [f"{name}: {measured:g}{unit}, want at least {floor:g}{unit}"]


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _per_disk(measured: dict, key: str) -> dict[str, float]:
    figures = measured.get(key)
    if isinstance(figures, dict):
        return {disk: float(v) for disk, v in figures.items() if isinstance(v, int | float)}
    single = _number(figures)
    return {"all": single} if single is not None else {}


def verdict(cls: HardwareClass, inventory: Inventory | None, result: ActionResult) -> list[str]:
    """Why the machine fails its class (empty: it passes). Every line names the figure, what
    was measured and what was wanted."""
    b, problems = cls.burn_in, []
    if not result.ok:
        problems.append(f"burn-in did not complete: {result.detail or 'no reason given'}")
    if inventory is not None:
        gib = inventory.memory_bytes / 1024**3
        problems += _below("cpus", inventory.cpus, b.min_cpus, "")
        problems += _below("memory", round(gib, 2), b.min_memory_gib, " GiB")
        problems += _below("disks", len(inventory.disks), b.min_disks, "")
        if b.expect_gpus is not None and len(inventory.gpus()) != b.expect_gpus:
            problems.append(f"gpus: {len(inventory.gpus())} found, want {b.expect_gpus}")
    m = result.measured
    problems += _below(
        "cpu", _number(m.get("cpu_bogo_ops_per_s")), b.min_cpu_bogo_ops_per_s, " bogo ops/s"
    )
    for key, floor in (
        ("disk_write_mib_s", b.min_disk_write_mib_s),
        ("disk_read_mib_s", b.min_disk_read_mib_s),
    ):
        figures = _per_disk(m, key)
        if floor is not None and not figures:
            problems += _below(key.removesuffix("_mib_s").replace("_", " "), None, floor, " MiB/s")
        for disk, value in sorted(figures.items()):
            label = f"{key.removesuffix('_mib_s').replace('_', ' ')} {disk}"
            problems += _below(label, value, floor, " MiB/s")
    smart = m.get("smart")
    if b.require_smart_pass and isinstance(smart, dict):
        problems += [f"smart {disk}: FAILED" for disk, health in sorted(smart.items())
                     if health == "FAILED"]  # fmt: skip
    return problems
