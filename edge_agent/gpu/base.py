"""The GPU records and the backend interface, kept free of NVML so that
hosts without an NVIDIA driver, and the simulated backend, never load it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

# Slow fields are read on the first sample and then on every Nth one.
DEFAULT_EXPENSIVE_EVERY = 6


@dataclass(frozen=True)
class GpuInfo:
    """Static description of one GPU, part of the host facts."""

    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    driver_version: str
    cuda_driver_version: str
    pci_bus_id: str
    mig_mode: str | None  # "enabled" / "disabled"; None where the GPU has no MIG
    simulated: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU; `metrics` holds only the fields read this time."""

    index: int
    uuid: str
    timestamp: float
    expensive: bool  # whether the slow-cadence fields were read
    metrics: dict[str, Any]
    simulated: bool
    errors: dict[str, str] = field(default_factory=dict)  # field -> transient NVML error

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class XidEvent:
    """A critical XID error reported by the driver (e.g. 79: GPU fell off the bus)."""

    index: int
    uuid: str
    xid: int
    timestamp: float
    simulated: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_REASON_BITS = {
    0x1: "GpuIdle",
    0x2: "ApplicationsClocksSetting",
    0x4: "SwPowerCap",
    0x8: "HwSlowdown",
    0x10: "SyncBoost",
    0x20: "SwThermalSlowdown",
    0x40: "HwThermalSlowdown",
    0x80: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
    0x200: "BoardLimit",
    0x400: "Reliability",
}


def reason_names(mask: int) -> list[str]:
    """Names of the set bits of an NVML clocks-event (throttle) reason mask."""
    return [name for bit, name in _REASON_BITS.items() if mask & bit]


class GpuBackend(ABC):
    """What the agent needs from a GPU source. Every result is a dataclass with
    to_dict(), JSON-ready for the hub."""

    name: str

    def __init__(self, expensive_every: int) -> None:
        if expensive_every < 1:
            raise ValueError("expensive_every must be >= 1")
        self._expensive_every = expensive_every
        self._samples_taken = 0

    @abstractmethod
    def available(self) -> bool:
        """True when at least one GPU can be read; a host without one is normal."""

    @abstractmethod
    def inventory(self) -> list[GpuInfo]: ...

    def sample(self, expensive: bool | None = None) -> list[GpuSample]:
        """Reads every GPU. Slow fields are read on the first call and then every
        `expensive_every` calls, unless `expensive` forces the choice."""
        if expensive is None:
            expensive = self._samples_taken % self._expensive_every == 0
            self._samples_taken += 1
        return self._sample(expensive)

    @abstractmethod
    def _sample(self, expensive: bool) -> list[GpuSample]: ...

    def unsupported_fields(self) -> dict[int, list[str]]:
        """Per GPU index, the fields this GPU cannot report (skipped from then on)."""
        return {}

    def events(self) -> list[XidEvent]:
        """Drains the XID events seen since the last call."""
        return []

    @property
    def events_active(self) -> bool:
        """Whether XID events are being watched."""
        return False

    def close(self) -> None:
        """Releases the driver; the backend reads nothing afterwards."""
        return None  # nothing to release unless a backend holds a driver

    def __enter__(self) -> GpuBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class NullBackend(GpuBackend):
    """`gpu_backend: none`: GPU monitoring is off, so the host reports no GPUs."""

    name = "none"

    def __init__(self) -> None:
        super().__init__(DEFAULT_EXPENSIVE_EVERY)

    def available(self) -> bool:
        return False

    def inventory(self) -> list[GpuInfo]:
        return []

    def _sample(self, expensive: bool) -> list[GpuSample]:
        return []
